"""SimCLR training throughput on Fashion-MNIST (image pairs per second), contrastkit vs lightly vs
the floor, in the same run.

- ``ours``: ``contrastkit.tasks.runner.train`` on the shipped ``fashion-mnist-simclr`` recipe with the
  issue's network (5-layer CNN, width 32, projection 128→128→64) and batch 256: the whole loop
  (batch assembly, augmentation on the in-memory uint8 tensor, step, logs) as users run it.
- ``lightly``: lightly's SimCLR (benchmarks/lightly_simclr_anchor.py: NTXentLoss,
  SimCLRProjectionHead, PIL transforms in a DataLoader with one worker), same network, batch,
  augmentations, optimiser.
- ``floor`` / ``floor_contiguous``: forward + backward of the same network (encoder + projection
  head, built by the same recipe) alone on one fixed batch of 2 x 256 augmented images
  (channels_last / contiguous): no batch assembly, augmentation, loss or optimiser.
- ``ours_compiled`` / ``floor_compiled``: the same with ``torch.compile`` (``train.compile=true``
  for ours); compilation happens in the warm-up steps and is not timed.

Each contender runs in its own process for --warmup + --steps steps and reports the pairs/s of
the timed steps; contenders are interleaved (A B C A B C ...) because the machine is shared, and
the table quotes the median round of each and the ratios. Run with the `bench` extra installed:

    python benchmarks/train_throughput.py --rounds 3 --steps 30
    python benchmarks/train_throughput.py --breakdown --steps 10   # where contrastkit's step goes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CONTENDERS = ("lightly", "ours", "ours_compiled", "floor", "floor_contiguous", "floor_compiled")
ENV = {"OMP_WAIT_POLICY": "PASSIVE"}  # see benchmarks/loss_speed.py
BATCH = 256
WIDTH = 32


def _recipe_overrides(extra: list[str]) -> list[str]:
    return [
        f"model.width={WIDTH}",
        f"train.batch_size={BATCH}",
        "train.progress=false",
        "train.checkpoint_every=1000000",
        "eval.enabled=false",
        *extra,
    ]


def child_ours(warmup: int, steps: int, threads: int, extra: list[str]) -> float:
    import torch

    from contrastkit.config import load_config

    torch.set_num_threads(threads)
    cfg = load_config(
        "fashion-mnist-simclr",
        _recipe_overrides([f"train.max_steps={warmup + steps}", f"train.num_threads={threads}", *extra]),
    )
    return BATCH * steps / timed_steps(cfg, warmup, steps)


def timed_steps(cfg: Any, warmup: int, steps: int) -> float:
    """Seconds of steps warmup + 1 .. warmup + steps of a contrastkit training run of `cfg`."""
    from contrastkit.tasks.runner import train

    marks: dict[int, float] = {}

    def mark(step: int, logs: dict[str, float]) -> None:
        if step in (warmup, warmup + steps):
            marks[step] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp), progress=False, callbacks=[mark], verbose=False)
    return marks[warmup + steps] - marks[warmup]


def child_lightly(warmup: int, steps: int, threads: int) -> float:
    import numpy as np
    import torch
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead

    sys.path.insert(0, str(HERE))
    from lightly_simclr_anchor import convnet5, two_view_loader  # the anchor's exact pieces

    from contrastkit.config import load_config
    from contrastkit.data.image import read_idx

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = load_config("fashion-mnist-simclr", _recipe_overrides([]))
    crop = next(op for op in cfg.data.augment or [] if op["op"] == "random_resized_crop")
    root = Path("/usr/share/datasets/fashion-mnist")
    train_x = read_idx(root / "train-images-idx3-ubyte.gz")
    loader = two_view_loader(train_x, crop_min=crop["scale"][0], batch_size=BATCH, workers=1)
    model = torch.nn.Sequential(convnet5(WIDTH), SimCLRProjectionHead(4 * WIDTH, 128, 64))
    crit = NTXentLoss(temperature=cfg.method.temperature)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=1e-4)
    done, start = 0, 0.0
    while done < warmup + steps:
        for x1, x2 in loader:
            loss = crit(model(x1), model(x2))
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == warmup:
                start = time.perf_counter()
            if done == warmup + steps:
                break
    del np
    return BATCH * steps / (time.perf_counter() - start)


def child_floor(warmup: int, steps: int, threads: int, channels_last: bool, *, compiled: bool = False) -> float:
    import torch

    from contrastkit.config import load_config
    from contrastkit.data.image.loader import InMemoryViewLoader
    from contrastkit.tasks.image import augmentation_for, build_model, load_split

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = load_config("fashion-mnist-simclr", _recipe_overrides([]))
    data = load_split(cfg, "train")
    method: Any = build_model(cfg, data.channels, 28)
    model = torch.nn.Sequential(method.encoder, method.projector)
    # one real batch of augmented views (2 x 256), made once: the floor times the network only
    loader = InMemoryViewLoader(data.images, batch_size=BATCH, augmentation=augmentation_for(cfg, data))
    x = torch.cat(next(loader.batches(0))["views"])
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if compiled:
        model = torch.compile(model)  # type: ignore[assignment]
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        model(x).square().mean().backward()
    return BATCH * steps / (time.perf_counter() - start)


def breakdown(steps: int, threads: int) -> None:
    """Mean time of each part of contrastkit's step: batch + augmentation, forward (training
    step; and the encoder forward alone for comparison), backward, optimiser."""
    import torch

    from contrastkit.config import load_config
    from contrastkit.data.image.loader import InMemoryViewLoader
    from contrastkit.tasks.image import augmentation_for, build_model, load_split
    from contrastkit.tasks.runner import trainer_options
    from contrastkit.train import Trainer

    torch.set_num_threads(threads)
    cfg = load_config("fashion-mnist-simclr", _recipe_overrides([]))
    data = load_split(cfg, "train")
    model: Any = build_model(cfg, data.channels, 28).to(memory_format=torch.channels_last)
    loader = InMemoryViewLoader(
        data.images, batch_size=BATCH, augmentation=augmentation_for(cfg, data), channels_last=True
    )
    with tempfile.TemporaryDirectory() as tmp:
        opt = Trainer(model, loader, Path(tmp), trainer_options(cfg, False), device=torch.device("cpu")).optimizer
    batches = loader.batches(0)
    parts = {"batch + augmentation": 0.0, "training_step forward": 0.0, "backward": 0.0,
             "optimiser": 0.0, "(encoder forward alone)": 0.0}
    for i in range(steps + 3):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        with torch.no_grad():
            model.encoder(torch.cat(batch["views"]))
        t2 = time.perf_counter()
        out = model.training_step(batch)
        t3 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        t4 = time.perf_counter()
        opt.step()
        t5 = time.perf_counter()
        if i >= 3:
            for key, dt in zip(parts, (t1 - t0, t3 - t2, t4 - t3, t5 - t4, t2 - t1), strict=True):
                parts[key] += dt / steps
    step = sum(v for k, v in parts.items() if not k.startswith("("))
    print(f"contrastkit step, mean of {steps}: {1e3 * step:.0f} ms")
    for key, value in parts.items():
        print(f"  {key:26s} {1e3 * value:6.0f} ms  {100 * value / step:5.1f} %")


def run(python: str, name: str, warmup: int, steps: int, threads: int, extra: list[str]) -> float:
    cmd = [python, __file__, "--child", name, "--warmup", str(warmup), "--steps", str(steps),
           "--threads", str(threads), *[a for e in extra for a in ("--set", e)]]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ENV}, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-2000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["pairs_per_sec"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--python", default=sys.executable, help="interpreter with torch, lightly and contrastkit")
    ap.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    ap.add_argument("--set", action="append", default=[], help="extra recipe override for ours")
    ap.add_argument("--child", choices=CONTENDERS)
    ap.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    ap.add_argument("--breakdown", action="store_true", help="time the parts of contrastkit's step")
    args = ap.parse_args()
    if args.breakdown:
        breakdown(args.steps, args.threads)
        return
    if args.child:
        if args.child in ("ours", "ours_compiled"):
            extra = [*args.set, *(["train.compile=true"] if args.child == "ours_compiled" else [])]
            value = child_ours(args.warmup, args.steps, args.threads, extra)
        elif args.child == "lightly":
            value = child_lightly(args.warmup, args.steps, args.threads)
        else:
            value = child_floor(
                args.warmup, args.steps, args.threads, args.child != "floor_contiguous",
                compiled=args.child == "floor_compiled",
            )
        print(json.dumps({"pairs_per_sec": value}))
        return

    results: dict[str, list[float]] = {name: [] for name in args.contenders}
    for rnd in range(args.rounds):
        for name in args.contenders:
            value = run(args.python, name, args.warmup, args.steps, args.threads, args.set)
            results[name].append(value)
            print(f"round {rnd + 1} {name}: {value:.1f} pairs/s", flush=True)
    import torch

    med = {name: statistics.median(v) for name, v in results.items()}
    print(
        f"\n{date.today()} · {platform.machine()} · {args.threads} threads · torch {torch.__version__} · "
        f"batch {BATCH} · convnet5 w{WIDTH} · {args.steps} timed steps after {args.warmup} · "
        f"{' '.join(f'{k}={v}' for k, v in ENV.items())} · median of {args.rounds} interleaved rounds\n"
    )
    print("| run | pairs/s (median) | rounds | vs lightly | vs floor (channels_last) |")
    print("|---|---|---|---|---|")
    for name, values in results.items():
        vs_l = f"{med[name] / med['lightly']:.2f}×" if "lightly" in med else "–"
        vs_f = f"{100 * med[name] / med['floor']:.0f} %" if "floor" in med else "–"
        print(f"| {name} | {med[name]:.0f} | {', '.join(f'{v:.0f}' for v in values)} | {vs_l} | {vs_f} |")
    if args.out:
        args.out.write_text(json.dumps({"rounds": results, "median": med}, indent=2))


if __name__ == "__main__":
    main()
