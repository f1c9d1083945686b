"""The default recipe on 128-px images: seconds per step and peak memory, with the stem that
``model.cifar_stem: auto`` now chooses against the full-resolution stem it had before (issue 23,
"Defaults that fit the user's images").

Both contenders train ``digits-simclr`` (the recipe ``contrastkit train`` runs by default:
small_resnet of width 32, SimCLR, its augmentations) on the same generated folder of 128×128
RGB images (``data.name=folder``, decoded into memory before training), at batch --batch:

- ``full``: ``model.cifar_stem=true``, the stem small_resnet always had (3×3 stride-1 conv, no
  max-pool: 128 px into the first stage) — what the default was before;
- ``auto``: the default now: above 32 px the stem downsamples ×4 (stride-2 conv + max-pool:
  32 px into the first stage).

Each contender runs in its own process (--warmup steps, then --steps timed steps) and reports
its seconds per step and the process's peak resident memory (ru_maxrss; on a GPU, the peak
allocated GPU memory); contenders run interleaved, and the table quotes the median round.

    python benchmarks/image_size_default.py --images /tmp/bench/jpegs128 --batch 32 --rounds 2
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import common
from data_images import make_folder

CONTENDERS = ("full", "auto")
SIZE = 128
STEM = {"full": "true", "auto": "auto"}


def child(name: str, images: str, batch: int, warmup: int, steps: int, threads: int, extra: list[str]) -> dict[str, float]:
    import torch

    from contrastkit.recipes import load_config
    from contrastkit.training.runtime import peak_memory_mb, resolve_device

    torch.set_num_threads(threads)
    cfg = load_config(None, [
        "data.name=folder", f"data.root={images}", f"data.image_size={SIZE}", f"model.cifar_stem={STEM[name]}",
        f"train.batch_size={batch}", f"train.max_steps={warmup + steps}", f"train.checkpoint_every={warmup + steps}",
        f"train.num_threads={threads}", "eval.enabled=false", *extra,
    ])
    seconds = common.timed_steps(cfg, warmup, steps)
    return {"seconds_per_step": seconds / steps, "peak_mb": peak_memory_mb(resolve_device(cfg.train.device))}


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--images", default="/tmp/bench/jpegs128", help="folder of 128-px JPEGs (generated if missing)")
    common.add_numbers(ap, count=512, batch=32, rounds=2, warmup=1, steps=3, threads=2)
    common.add_contenders(ap, CONTENDERS)
    common.add_overrides(ap, "both contenders, e.g. train.device=cuda")
    ap.add_argument("--out", default="runs/bench-image-size-default")
    args = ap.parse_args()
    if args.child:
        values = child(args.child, args.images, args.batch, args.warmup, args.steps, args.threads, args.set)
        print(json.dumps(values))
        return
    make_folder(Path(args.images), args.count, min_px=SIZE, max_px=SIZE)
    peaks: dict[str, list[float]] = {name: [] for name in args.contenders}

    def measure(name: str) -> float:
        cmd = [sys.executable, __file__, "--child", name, "--images", args.images, "--batch", str(args.batch),
               "--warmup", str(args.warmup), "--steps", str(args.steps), "--threads", str(args.threads),
               *common.set_args(args.set)]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **common.ENV}, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
        values = json.loads(done.stdout.strip().splitlines()[-1])
        peaks[name].append(float(values["peak_mb"]))
        return float(values["seconds_per_step"])

    results = common.interleaved(args.contenders, args.rounds, measure, "s/step")
    import torch

    med, peak = common.medians(results), common.medians(peaks)
    print(f"\n{date.today()} · {platform.machine()} · {os.cpu_count()} CPUs · {args.threads} threads · "
          f"torch {torch.__version__} · digits-simclr (small_resnet w32) · {SIZE} px RGB · batch {args.batch} · "
          f"{args.steps} timed steps after {args.warmup} · median of {args.rounds} interleaved rounds\n")
    print("| model.cifar_stem | s/step (median) | rounds | peak memory (MB) | speed-up over full |")
    print("|---|---|---|---|---|")
    for name in results:
        ratio = f"{med['full'] / med[name]:.1f}×" if "full" in med else "–"
        print(f"| {STEM[name]} ({name}) | {med[name]:.2f} | {', '.join(f'{v:.2f}' for v in results[name])} | "
              f"{peak[name]:.0f} | {ratio} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"date": str(date.today()), "threads": args.threads, "batch": args.batch, "steps": args.steps,
                               "warmup": args.warmup, "set": args.set, "seconds_per_step": results, "peak_mb": peaks,
                               "median": med, "median_peak_mb": peak}
    (out / "image_size_default.json").write_text(json.dumps(payload, indent=2))
    print(f"wrote {out / 'image_size_default.json'}")


if __name__ == "__main__":
    main()
