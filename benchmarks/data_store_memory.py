"""Peak resident memory while training SimCLR from a large image store (issue 13, benchmark 3).

``generate`` writes a synthetic store with ``contrastkit.data.image.store.write_store`` (a
``train`` split and a small ``test`` split; manifest with sizes, sha256 and the pixel statistics),
chunk by chunk, without PIL: each chunk is a fixed block of random images rolled by a per-chunk
offset and shifted by the chunk number, so rows differ and cost nothing to make. The default, 1,000,000 images of 64 px, is
12.3 GB of pixels (about half of this machine's RAM).

``measure`` trains the SimCLR run of benchmarks/data_images.py (``cifar10-simclr``'s augmentations,
the 5-layer CNN of width 32, batch 256) on the store (``data.name=store``) for ``--steps`` steps in a
child process with evaluation on a bounded sample (``eval.max_*_samples``) and reports the child's
peak resident memory (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``, which counts the page
cache pages the process has mapped and touched, i.e. the memory map's resident part) next to the
store's size. Target: <= 3 GB. A control runs the same recipe on a small store (50k images) so
the fixed cost (Python, torch, network, optimiser) is visible.

    python benchmarks/data_store_memory.py generate --store /tmp/store1m --count 1000000
    python benchmarks/data_store_memory.py measure --store /tmp/store1m --steps 300 --out runs/bench-store-mem
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from common import ENV, add_numbers, add_overrides, each_step, parser, set_args

CLASSES = [f"c{i}" for i in range(10)]


def _chunks(count: int, size: int, block: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`count` images in chunks of `block`: one block of random images rolled by a random offset
    and shifted by the chunk number per chunk (rows differ, cost nothing to make)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(block, 3, size, size), dtype=np.uint8)
    t0, written, k = time.monotonic(), 0, 0
    while written < count:
        n = min(block, count - written)
        chunk = np.roll(base, int(rng.integers(block)), axis=0)[:n] + np.uint8(k % 251)  # wraps
        yield chunk, (np.arange(written, written + n) % len(CLASSES)).astype(np.int64)
        written, k = written + n, k + 1
        if k % 25 == 0:
            print(f"  {written:,}/{count:,} images ({written / (time.monotonic() - t0):,.0f}/s)", flush=True)


def generate(store: Path, count: int, test_count: int, size: int, block: int) -> None:
    from contrastkit.data.image.store import write_store

    t0 = time.monotonic()
    manifest = write_store(
        store,
        {"train": _chunks(count, size, block, 0), "test": _chunks(test_count, size, block, 1)},
        classes=CLASSES, source="synthetic (benchmarks/data_store_memory.py generate)",
    )
    splits = manifest["splits"]
    gb = sum(s["files"]["images"]["bytes"] for s in splits.values()) / 1e9
    print(f"wrote {store}: {count:,} + {test_count:,} images, {gb:.2f} GB in {time.monotonic() - t0:.0f} s "
          "(hashed and its statistics computed: training opens it at once)")


def _status() -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS so far), RssAnon (heap: tensors, Python), RssFile (mapped file pages:
    the store) of this process, in MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) // 1024
    return fields


def child(store: str, steps: int, threads: int, out: str, extra: list[str]) -> None:
    """In the measured process: train on the store with an RSS trace, evaluate, print the RESULT line."""
    import torch
    from data_images import SIMCLR_OVERRIDES, SIMCLR_RECIPE

    from contrastkit.recipes import load_config
    from contrastkit.runner import open_run, train_run

    torch.set_num_threads(threads)
    cfg = load_config(SIMCLR_RECIPE, [
        *SIMCLR_OVERRIDES, "data.name=store", f"data.root={store}", f"train.max_steps={steps}",
        f"train.num_threads={threads}", *extra,
    ])
    peaks = []

    def mark(step: int) -> None:
        if step % 25 == 0 or step == 1:
            peaks.append((step, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, _status()))

    t0 = time.perf_counter()
    train_run(cfg, Path(out), progress=False, callbacks=[each_step(mark)], verbose=False)
    dt = time.perf_counter() - t0
    ev = open_run(cfg, out).evaluate(verbose=False) if cfg.eval.enabled else {}
    final = dict(_status(), maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    numbers = {k: v for k, v in ev.items() if isinstance(v, (int, float))}
    print("RESULT " + json.dumps({"seconds": dt, "rss_by_step_mb": peaks, "after_eval_mb": final, "eval": numbers}),
          flush=True)


def _child_peak(store: Path, steps: int, threads: int, extra: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, __file__, "child", "--store", str(store), "--steps", str(steps),
             "--threads", str(threads), "--out", tmp, *set_args(extra)],
            capture_output=True, text=True, env={**os.environ, **ENV},
        )
        wall = time.monotonic() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"child failed ({proc.returncode})")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    res: dict[str, Any] = json.loads(line[7:])
    res["wall_seconds"] = wall
    return res


def measure(args: argparse.Namespace) -> None:
    extra = [
        f"eval.max_train_samples={args.eval_samples}",
        f"eval.max_test_samples={args.eval_samples}",
        "eval.finetune=false", "eval.plots=false", "eval.few_label_shots=[10]", "eval.few_label_draws=1",
        *args.set,
    ]
    stores = [("large", Path(args.store))] + ([("control", Path(args.control))] if args.control else [])
    rows = []
    for name, store in stores:
        manifest = json.loads((store / "manifest.json").read_text())
        n = manifest["splits"]["train"]["count"]
        gb = manifest["splits"]["train"]["files"]["images"]["bytes"] / 1e9
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        res = _child_peak(store, args.steps, args.threads, extra)
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        # RUSAGE_CHILDREN's maxrss is the largest of all waited-for children: valid per row only
        # while rows grow; the child's own in-process trace is quoted as well.
        peak_mb = max([r for _, r, _ in res["rss_by_step_mb"]] + [res["after_eval_mb"]["maxrss"]]
                      + [after / 1024 if after > before else 0])
        train_peak = max((r for _, r, _ in res["rss_by_step_mb"]), default=0)
        anon_peak = max((st.get("RssAnon", 0) for _, _, st in res["rss_by_step_mb"]), default=0)
        file_peak = max((st.get("RssFile", 0) for _, _, st in res["rss_by_step_mb"]), default=0)
        rows.append({"store": name, "images": n, "store_gb": round(gb, 2), "steps": args.steps,
                     "peak_rss_mb": round(peak_mb), "children_maxrss_mb": round(after / 1024),
                     "train_peak_rss_mb": round(train_peak), "train_peak_anon_mb": anon_peak,
                     "train_peak_file_mb": file_peak, "after_eval_mb": res["after_eval_mb"],
                     "train_seconds": round(res["seconds"], 1), "rss_by_step_mb": res["rss_by_step_mb"],
                     "eval": res["eval"]})
    print(f"{'store':8} {'images':>10} {'store GB':>9} {'steps':>6} {'peak RSS MB':>12} {'training':>9} "
          f"{'anon':>6} {'file':>6} {'target':>8}")
    for r in rows:
        ok = "met" if r["peak_rss_mb"] <= 3 * 1024 else "MISSED"
        print(f"{r['store']:8} {r['images']:>10,} {r['store_gb']:>9} {r['steps']:>6} {r['peak_rss_mb']:>12,} "
              f"{r['train_peak_rss_mb']:>9,} {r['train_peak_anon_mb']:>6,} {r['train_peak_file_mb']:>6,} {ok:>8}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_store_memory.json").write_text(json.dumps(
        {"date": str(date.today()), "threads": args.threads, "eval_samples": args.eval_samples,
         "rows": rows, "cpu_count": os.cpu_count()}, indent=2))
    print(f"wrote {out / 'data_store_memory.json'}")


def main() -> None:
    ap = parser(__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--store", required=True)
    g.add_argument("--count", type=int, default=1_000_000)
    g.add_argument("--test-count", type=int, default=10_000)
    g.add_argument("--size", type=int, default=64)
    g.add_argument("--block", type=int, default=4096)
    m = sub.add_parser("measure")
    m.add_argument("--store", required=True)
    m.add_argument("--control", help="a small store measured the same way (fixed costs)")
    m.add_argument("--steps", type=int, default=300)
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--eval-samples", type=int, default=10_000)
    add_overrides(m, "the recipe")
    m.add_argument("--out", default="runs/bench-data-store-memory")
    c = sub.add_parser("child", help="(the measured process, started by measure)")
    c.add_argument("--store", required=True)
    c.add_argument("--out", required=True, help="its run folder")
    add_numbers(c, steps=300, threads=2)
    add_overrides(c, "the recipe")
    args = ap.parse_args()
    if args.cmd == "generate":
        generate(Path(args.store), args.count, args.test_count, args.size, args.block)
    elif args.cmd == "child":
        child(args.store, args.steps, args.threads, args.out, args.set)
    else:
        measure(args)


if __name__ == "__main__":
    main()
