"""Prepare throughput (images/s): ``contrastkit prepare`` against torchvision ``ImageFolder`` +
``DataLoader`` decoding and resizing the same JPEG folder with the same worker count (issue 13,
benchmark 1).

- ``prepare``: the CLI as users run it, ``contrastkit prepare FOLDER --out STORE --size S
  --workers W`` (listing, header pass, decode + resize + centre crop in W worker processes,
  writing the store's files, sha256 of every file, manifest), into a fresh folder each time.
- ``imagefolder``: ``torchvision.datasets.ImageFolder`` with ``Resize(S)`` (shorter side,
  bilinear, antialiased) + ``CenterCrop(S)`` + ``PILToTensor`` in a ``DataLoader`` (batch 256,
  W workers), every batch copied into one preallocated uint8 array in memory (no file written,
  no hash: this favours the anchor).

Both run in a fresh process (imports included in the wall time; each child also reports its
time after imports: for ``prepare`` the "N images in T s" line it prints, which includes
starting its workers), interleaved A B A B ... on the same folder (in the page cache after the
first round); the table quotes the median of the rounds and the ratio.

    python benchmarks/data_prepare.py --images /tmp/bench/jpegs30k --count 30000 --rounds 3 --out runs/bench-data-prepare-30k
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONTENDERS = ("prepare", "imagefolder")

IMAGEFOLDER = r"""
import json, sys, time
t_import = time.perf_counter()
import numpy as np, torch
from torchvision import datasets, transforms
root, size, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
t0 = time.perf_counter()
tf = transforms.Compose([transforms.Resize(size, antialias=True), transforms.CenterCrop(size),
                         transforms.PILToTensor()])
ds = datasets.ImageFolder(root, transform=tf, loader=lambda p: __import__("PIL.Image").Image.open(p).convert("RGB"))
out = np.empty((len(ds), 3, size, size), np.uint8)
loader = torch.utils.data.DataLoader(ds, batch_size=256, num_workers=workers)
k = 0
for x, _ in loader:
    out[k:k + len(x)] = x.numpy()
    k += len(x)
print(json.dumps({"images": k, "inner_seconds": time.perf_counter() - t0}))
"""


def run_one(name: str, python: str, images: Path, size: int, workers: int) -> dict[str, float]:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        if name == "prepare":
            cli = str(Path(python).with_name("contrastkit"))
            cmd = [cli, "prepare", str(images), "--out", f"{tmp}/store", "--size", str(size), "--workers", str(workers)]
        else:
            cmd = [python, "-c", IMAGEFOLDER, str(images), str(size), str(workers)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
        if name == "prepare":
            manifest = json.loads((Path(tmp) / "store" / "manifest.json").read_text())
            n = sum(s["count"] for s in manifest["splits"].values())
            said = re.search(r"(\d+) images in ([\d.]+) s", proc.stdout)  # the CLI's own timing
            inner = float(said.group(2)) if said else None
        else:
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            n, inner = res["images"], res["inner_seconds"]
        shutil.rmtree(tmp, ignore_errors=True)
    return {"images": n, "wall_seconds": wall, "images_per_sec": n / wall,
            "inner_images_per_sec": (n / inner) if inner else None}


def per_image(images: Path, size: int, n: int, rounds: int = 2) -> dict[str, float]:
    """Per-image cost in one process and one thread (no workers, no start-up): contrastkit's
    decode + resize (torchvision decode_image, antialiased bilinear in torch) vs PIL's, interleaved."""
    import torch
    from PIL import Image
    from torchvision import transforms

    from contrastkit.data.image.decode import decode_file, resize_center_crop

    torch.set_num_threads(1)
    files = sorted(images.rglob("*.jpg"))[:n]
    tf = transforms.Compose([transforms.Resize(size, antialias=True), transforms.CenterCrop(size),
                             transforms.PILToTensor()])
    best = {"contrastkit_ms": float("inf"), "pil_ms": float("inf")}
    for _ in range(rounds):
        t0 = time.perf_counter()
        for f in files:
            resize_center_crop(decode_file(f), size)
        t1 = time.perf_counter()
        for f in files:
            with Image.open(f) as im:
                tf(im.convert("RGB"))
        t2 = time.perf_counter()
        best["contrastkit_ms"] = min(best["contrastkit_ms"], 1e3 * (t1 - t0) / len(files))
        best["pil_ms"] = min(best["pil_ms"], 1e3 * (t2 - t1) / len(files))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default="/tmp/bench/jpegs", help="image folder (generated if missing)")
    ap.add_argument("--count", type=int, default=6000, help="images to generate when --images is missing")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--out", default="runs/bench-data-prepare")
    ap.add_argument("--per-image", type=int, default=0, metavar="N",
                    help="only time decode + resize per image on N files, in this process (no workers)")
    args = ap.parse_args()
    if args.per_image:
        res = per_image(Path(args.images), args.size, args.per_image)
        print(f"per image, best of 2 interleaved rounds on {args.per_image} files, 1 thread: contrastkit "
              f"{res['contrastkit_ms']:.2f} ms, PIL + torchvision transforms {res['pil_ms']:.2f} ms")
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "data_prepare_per_image.json").write_text(json.dumps(res, indent=2))
        return
    sys.path.insert(0, str(HERE))
    from data_images import make_folder

    images = make_folder(Path(args.images), args.count)
    results: dict[str, list[dict[str, float]]] = {c: [] for c in CONTENDERS}
    for rnd in range(args.rounds):
        for name in CONTENDERS:
            r = run_one(name, args.python, images, args.size, args.workers)
            results[name].append(r)
            print(f"round {rnd + 1} {name}: {r['images']} images in {r['wall_seconds']:.1f} s "
                  f"({r['images_per_sec']:.0f}/s)", flush=True)
    med = {c: statistics.median(r["images_per_sec"] for r in rs) for c, rs in results.items()}
    inner = {c: statistics.median(r["inner_images_per_sec"] or 0.0 for r in rs) for c, rs in results.items()}
    print(f"\n{date.today()} · {platform.machine()} · {os.cpu_count()} CPUs · {args.workers} workers · "
          f"{args.size} px · median of {args.rounds} interleaved rounds\n")
    print("| run | images/s, wall incl. start-up (median) | rounds | ratio | images/s after imports | ratio |")
    print("|---|---|---|---|---|---|")
    for c in CONTENDERS:
        rounds = ", ".join(f"{r['images_per_sec']:.0f}" for r in results[c])
        print(f"| {c} | {med[c]:.0f} | {rounds} | {med[c] / med['imagefolder']:.2f}× | {inner[c]:.0f} | "
              f"{inner[c] / inner['imagefolder']:.2f}× |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_prepare.json").write_text(json.dumps(
        {"date": str(date.today()), "workers": args.workers, "size": args.size, "images": str(images),
         "rounds": results, "median_images_per_sec": med, "median_after_imports": inner,
         "ratio_prepare_vs_imagefolder": med["prepare"] / med["imagefolder"]}, indent=2))
    print(f"wrote {out / 'data_prepare.json'}")


if __name__ == "__main__":
    main()
