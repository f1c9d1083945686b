"""SimCLR training throughput (images/s) by data path, same network, batch, augmentations and
optimiser (issue 13, benchmark 2): a store vs the in-memory folder vs torchvision ``ImageFolder`` +
``DataLoader`` as lightly / solo-learn run it by default vs our streaming folder mode.

All four train the SimCLR run of benchmarks/data_images.py (``cifar10-simclr``'s augmentations,
lightly's 5-layer CNN of width 32, projection 128 -> 64, AdamW, batch 256, 32 px as CIFAR) on the same
generated JPEG folder:

- ``memory``: ``contrastkit train`` with ``data.name=folder`` (decoded into memory before training,
  not timed), batches gathered and augmented in batches in the training process;
- ``store``: ``data.name=store`` on the store ``contrastkit prepare`` made of the same folder
  (``--size 32``): rows read from the memory map, then the same batched augmentation;
- ``stream``: ``data.name=folder`` with ``data.stream=true`` and ``data.workers=2``: each batch's
  files decoded, resized and cropped in DataLoader workers, then the same batched augmentation;
- ``imagefolder``: ``torchvision.datasets.ImageFolder`` + ``DataLoader`` (2 workers, shuffle,
  drop_last) with per-sample PIL transforms producing two views (Resize + CenterCrop to 32 as the
  store has, then RandomResizedCrop, flip, ColorJitter, RandomGrayscale, ToTensor, Normalize),
  the way lightly / solo-learn feed SimCLR by default; then the same network (built by contrastkit
  from the same recipe), the same loss (``training_step``) and AdamW step.

Each contender runs in its own process for --warmup + --steps steps and reports the images/s of the
timed steps (images = batch x steps, i.e. pairs/s); contenders run interleaved
(memory store imagefolder stream, memory store ...) because the machine is shared, and the table
quotes the median round of each and the ratios. Targets (issue 13): store >= 95 % of memory and
>= 1.5x imagefolder.

    python benchmarks/data_train_throughput.py --images /tmp/bench/jpegs --rounds 3 --steps 20 --out runs/bench-data-train
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from data_images import SIMCLR_OVERRIDES, SIMCLR_RECIPE, make_folder  # noqa: E402
from train_throughput import timed_steps  # noqa: E402

CONTENDERS = ("memory", "store", "imagefolder", "stream")
SIZE = 32
ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def _overrides(name: str, images: str, store: str, warmup: int, steps: int, threads: int,
               extra: list[str]) -> list[str]:
    common = [*SIMCLR_OVERRIDES, f"train.max_steps={warmup + steps}", f"train.num_threads={threads}",
              "eval.enabled=false", *extra]
    if name == "store":
        return [*common, "data.name=store", f"data.root={store}"]
    data = [*common, "data.name=folder", f"data.root={images}", f"data.image_size={SIZE}"]
    return [*data, "data.stream=true", "data.workers=2"] if name == "stream" else data


def child_ours(name: str, images: str, store: str, warmup: int, steps: int, threads: int, extra: list[str]) -> float:
    import torch

    from contrastkit.config import load_config

    torch.set_num_threads(threads)
    cfg = load_config(SIMCLR_RECIPE, _overrides(name, images, store, warmup, steps, threads, extra))
    return cfg.train.batch_size * steps / timed_steps(cfg, warmup, steps)


def child_imagefolder(images: str, store: str, warmup: int, steps: int, threads: int, extra: list[str]) -> float:
    import torch
    from torchvision import datasets, transforms

    from contrastkit.config import load_config
    from contrastkit.tasks.image import build_model, load_split

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = load_config(SIMCLR_RECIPE, _overrides("store", images, store, warmup, steps, threads, extra))
    ops = {op["op"]: op for op in cfg.data.augment or []}
    stats = load_split(cfg, "train")  # the store: only for the normalisation statistics
    mean, std = stats.mean(), stats.std()
    cj, crop = ops["color_jitter"], ops["random_resized_crop"]
    view = transforms.Compose([
        transforms.RandomResizedCrop(SIZE, scale=tuple(crop["scale"]), antialias=True),
        transforms.RandomHorizontalFlip(ops["horizontal_flip"].get("p", 0.5)),
        transforms.RandomApply([transforms.ColorJitter(cj["brightness"], cj["contrast"], cj["saturation"], cj["hue"])],
                               p=cj.get("p", 0.8)),
        transforms.RandomGrayscale(ops["random_grayscale"].get("p", 0.2)),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    base = transforms.Compose([transforms.Resize(SIZE, antialias=True), transforms.CenterCrop(SIZE)])

    def two_views(img: Any) -> tuple[Any, Any]:
        img = base(img.convert("RGB"))
        return view(img), view(img)

    ds = datasets.ImageFolder(images, transform=two_views)
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=True, num_workers=2,
                                         drop_last=True)
    model: Any = build_model(cfg, 3, SIZE)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    done, start = 0, 0.0
    while done < warmup + steps:
        for (x1, x2), _ in loader:
            if cfg.train.channels_last:
                x1 = x1.contiguous(memory_format=torch.channels_last)
                x2 = x2.contiguous(memory_format=torch.channels_last)
            out = model.training_step({"views": [x1, x2], "index": torch.arange(len(x1))})
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            done += 1
            if done == warmup:
                start = time.perf_counter()
            if done == warmup + steps:
                break
    return cfg.train.batch_size * steps / (time.perf_counter() - start)


def run(name: str, args: argparse.Namespace, store: str) -> float:
    cmd = [sys.executable, __file__, "--child", name, "--images", args.images, "--store", store,
           "--warmup", str(args.warmup), "--steps", str(args.steps), "--threads", str(args.threads),
           *(x for o in args.set for x in ("--set", o))]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ENV}, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["images_per_sec"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default="/tmp/bench/jpegs", help="JPEG folder (generated if missing)")
    ap.add_argument("--count", type=int, default=6000)
    ap.add_argument("--store", default=None, help="store of --images at 32 px (prepared if missing)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    ap.add_argument("--set", action="append", default=[],
                    help="recipe override for every contender, e.g. model.width=8 (a lighter network)")
    ap.add_argument("--child", choices=CONTENDERS)
    ap.add_argument("--out", default="runs/bench-data-train")
    args = ap.parse_args()
    store = args.store or f"{args.images.rstrip('/')}-store{SIZE}"
    if args.child:
        if args.child == "imagefolder":
            value = child_imagefolder(args.images, store, args.warmup, args.steps, args.threads, args.set)
        else:
            value = child_ours(args.child, args.images, store, args.warmup, args.steps, args.threads, args.set)
        print(json.dumps({"images_per_sec": value}))
        return
    make_folder(Path(args.images), args.count)
    if not (Path(store) / "manifest.json").is_file():
        cli = str(Path(sys.executable).with_name("contrastkit"))
        subprocess.run([cli, "prepare", args.images, "--out", store, "--size", str(SIZE), "--workers", "2",
                        "--quiet"], check=True)
    results: dict[str, list[float]] = {name: [] for name in args.contenders}
    for rnd in range(args.rounds):
        for name in args.contenders:
            value = run(name, args, store)
            results[name].append(value)
            print(f"round {rnd + 1} {name}: {value:.1f} images/s", flush=True)
    import torch

    med = {name: statistics.median(v) for name, v in results.items()}
    print(f"\n{date.today()} · {platform.machine()} · {os.cpu_count()} CPUs · {args.threads} threads · "
          f"torch {torch.__version__} · batch 256 · convnet5 {' '.join(args.set) or 'w32'} · {SIZE} px · {args.steps} timed steps after "
          f"{args.warmup} · median of {args.rounds} interleaved rounds\n")
    print("| run | images/s (median) | rounds | vs memory | vs imagefolder |")
    print("|---|---|---|---|---|")
    for name, values in results.items():
        vs_m = f"{100 * med[name] / med['memory']:.0f} %" if "memory" in med else "–"
        vs_i = f"{med[name] / med['imagefolder']:.2f}×" if "imagefolder" in med else "–"
        print(f"| {name} | {med[name]:.0f} | {', '.join(f'{v:.0f}' for v in values)} | {vs_m} | {vs_i} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"date": str(date.today()), "threads": args.threads, "steps": args.steps, "set": args.set,
                               "warmup": args.warmup, "rounds": results, "median": med}
    if {"store", "memory", "imagefolder"} <= med.keys():
        payload["targets"] = {
            "store_vs_memory": med["store"] / med["memory"], "store_vs_memory_met": med["store"] >= 0.95 * med["memory"],
            "store_vs_imagefolder": med["store"] / med["imagefolder"],
            "store_vs_imagefolder_met": med["store"] >= 1.5 * med["imagefolder"],
        }
    (out / "data_train_throughput.json").write_text(json.dumps(payload, indent=2))
    print(f"wrote {out / 'data_train_throughput.json'}")


if __name__ == "__main__":
    main()
