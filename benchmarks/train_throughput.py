"""SimCLR training throughput on Fashion-MNIST (image pairs per second), contrastkit vs lightly vs
the floor, in the same run.

- ``ours``: ``contrastkit.runner.train_run`` on the shipped ``fashion-mnist-simclr`` recipe with the
  issue's network (5-layer CNN, width 32, projection 128→128→64) and batch 256: the whole loop
  (batch assembly, augmentation on the in-memory uint8 tensor, step, logs) as users run it.
- ``lightly``: lightly's SimCLR (benchmarks/lightly_anchor.py: NTXentLoss,
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

import json
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import common

CONTENDERS = ("lightly", "ours", "ours_compiled", "floor", "floor_contiguous", "floor_compiled")
BATCH = 256
WIDTH = 32


def config(extra: list[str]) -> Any:
    """The shipped fashion-mnist-simclr recipe with the issue's network and batch, no evaluation."""
    from contrastkit.recipes import load_config

    return load_config("fashion-mnist-simclr", [
        f"model.width={WIDTH}", f"train.batch_size={BATCH}", "train.progress=false",
        "train.checkpoint_every=1000000", "eval.enabled=false", *extra,
    ])


def child_ours(warmup: int, steps: int, threads: int, extra: list[str]) -> float:
    import torch

    torch.set_num_threads(threads)
    cfg = config([f"train.max_steps={warmup + steps}", f"train.num_threads={threads}", *extra])
    return BATCH * steps / common.timed_steps(cfg, warmup, steps)


def child_lightly(warmup: int, steps: int, threads: int) -> float:
    import torch
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly_anchor import convnet5, two_view_loader  # the anchor's exact pieces

    from contrastkit.data.image import read_idx

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = config([])
    crop = next(op for op in cfg.data.augment or [] if op["op"] == "random_resized_crop")
    root = Path("/usr/share/datasets/fashion-mnist")
    train_x = read_idx(root / "train-images-idx3-ubyte.gz")
    loader = two_view_loader(train_x, crop_min=crop["scale"][0], batch_size=BATCH, workers=1)
    model = torch.nn.Sequential(convnet5(WIDTH), SimCLRProjectionHead(4 * WIDTH, 128, 64))
    crit = NTXentLoss(temperature=cfg.method.temperature)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=1e-4)

    def step(views: list[torch.Tensor]) -> None:  # the two views of a batch
        loss = crit(model(views[0]), model(views[1]))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return BATCH * steps / common.timed_loop(loader, step, warmup, steps)


def child_floor(warmup: int, steps: int, threads: int, channels_last: bool, *, compiled: bool = False) -> float:
    import torch

    from contrastkit.data.image.loader import InMemoryViewLoader
    from contrastkit.data.image.spec import augmentation_for, load_split
    from contrastkit.methods.base import build_image_method

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = config([])
    data = load_split(cfg.data, "train")
    method: Any = build_image_method(cfg.method, cfg.model, data.channels, 28)
    model = torch.nn.Sequential(method.encoder, method.projector)
    # one real batch of augmented views (2 x 256), made once: the floor times the network only
    loader = InMemoryViewLoader(data.images, batch_size=BATCH, augmentation=augmentation_for(cfg.data, data))
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
    step; and the encoder forward alone for comparison), backward, optimiser. The model, batches
    and optimiser are the image task's own (what the training loop runs)."""
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        training = common.task_training(config([f"train.num_threads={threads}"]), Path(tmp))
    model: Any = training.step.model
    opt = training.step.optimizer
    batches = training.batches.batches(0)
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


def child(name: str, warmup: int, steps: int, threads: int, extra: list[str]) -> float:
    if name in ("ours", "ours_compiled"):
        return child_ours(warmup, steps, threads, [*extra, *(["train.compile=true"] if name == "ours_compiled" else [])])
    if name == "lightly":
        return child_lightly(warmup, steps, threads)
    return child_floor(warmup, steps, threads, name != "floor_contiguous", compiled=name == "floor_compiled")


def main() -> None:
    ap = common.parser(__doc__)
    common.add_numbers(ap, rounds=3, warmup=5, steps=30, threads=2)
    ap.add_argument("--python", default=sys.executable, help="interpreter with torch, lightly and contrastkit")
    common.add_contenders(ap, CONTENDERS)
    common.add_overrides(ap, "ours")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    ap.add_argument("--breakdown", action="store_true", help="time the parts of contrastkit's step")
    args = ap.parse_args()
    if args.breakdown:
        breakdown(args.steps, args.threads)
        return
    if args.child:
        print(json.dumps({"pairs_per_sec": child(args.child, args.warmup, args.steps, args.threads, args.set)}))
        return

    def measure(name: str) -> float:
        cmd = [args.python, __file__, "--child", name, "--warmup", str(args.warmup), "--steps", str(args.steps),
               "--threads", str(args.threads), *common.set_args(args.set)]
        return common.child_value(cmd, name, "pairs_per_sec")

    results = common.interleaved(args.contenders, args.rounds, measure, "pairs/s")
    import torch

    print(
        f"\n{date.today()} · {platform.machine()} · {args.threads} threads · torch {torch.__version__} · "
        f"batch {BATCH} · convnet5 w{WIDTH} · {args.steps} timed steps after {args.warmup} · "
        f"{' '.join(f'{k}={v}' for k, v in common.ENV.items())} · median of {args.rounds} interleaved rounds\n"
    )
    print(common.ratio_table(results, "pairs/s", [("lightly", "x"), ("floor", "%")]))
    if args.out:
        args.out.write_text(json.dumps({"rounds": results, "median": common.medians(results)}, indent=2))


if __name__ == "__main__":
    main()
