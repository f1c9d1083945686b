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

import json
import os
import platform
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import common
from data_images import SIMCLR_OVERRIDES, SIMCLR_RECIPE, make_folder

CONTENDERS = ("memory", "store", "imagefolder", "stream")
SIZE = 32


def config(name: str, images: str, store: str, warmup: int, steps: int, threads: int, extra: list[str]) -> Any:
    """The SimCLR run of the data benchmarks reading the data the way contender ``name`` does."""
    from contrastkit.recipes import load_config

    run = [*SIMCLR_OVERRIDES, f"train.max_steps={warmup + steps}", f"train.num_threads={threads}",
           "eval.enabled=false", *extra]
    if name == "store":
        return load_config(SIMCLR_RECIPE, [*run, "data.name=store", f"data.root={store}"])
    data = [*run, "data.name=folder", f"data.root={images}", f"data.image_size={SIZE}"]
    return load_config(SIMCLR_RECIPE, [*data, "data.stream=true", "data.workers=2"] if name == "stream" else data)


def child_ours(name: str, images: str, store: str, warmup: int, steps: int, threads: int, extra: list[str]) -> float:
    import torch

    torch.set_num_threads(threads)
    cfg = config(name, images, store, warmup, steps, threads, extra)
    return cfg.train.batch_size * steps / common.timed_steps(cfg, warmup, steps)


def child_imagefolder(images: str, store: str, warmup: int, steps: int, threads: int, extra: list[str]) -> float:
    import torch
    from torchvision import datasets, transforms

    from contrastkit.data.image.spec import load_split
    from contrastkit.methods.base import build_image_method

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = config("store", images, store, warmup, steps, threads, extra)
    ops = {op["op"]: op for op in cfg.data.augment or []}
    stats = load_split(cfg.data, "train")  # the store: only for the normalisation statistics
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
    model: Any = build_image_method(cfg.method, cfg.model, 3, SIZE)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format

    def step(batch: Any) -> None:
        views = [x.contiguous(memory_format=memory_format) for x in batch[0]]
        out = model.training_step({"views": views, "index": torch.arange(len(views[0]))})
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    return cfg.train.batch_size * steps / common.timed_loop(loader, step, warmup, steps)


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--images", default="/tmp/bench/jpegs", help="JPEG folder (generated if missing)")
    ap.add_argument("--store", default=None, help="store of --images at 32 px (prepared if missing)")
    common.add_numbers(ap, count=6000, rounds=3, warmup=3, steps=20, threads=2)
    common.add_contenders(ap, CONTENDERS)
    common.add_overrides(ap, "every contender, e.g. model.width=8 (a lighter network)")
    ap.add_argument("--out", default="runs/bench-data-train")
    args = ap.parse_args()
    store = args.store or f"{args.images.rstrip('/')}-store{SIZE}"
    if args.child:
        how = (args.images, store, args.warmup, args.steps, args.threads, args.set)
        value = child_imagefolder(*how) if args.child == "imagefolder" else child_ours(args.child, *how)
        print(json.dumps({"images_per_sec": value}))
        return
    make_folder(Path(args.images), args.count)
    if not (Path(store) / "manifest.json").is_file():
        cli = str(Path(sys.executable).with_name("contrastkit"))
        subprocess.run([cli, "prepare", args.images, "--out", store, "--size", str(SIZE), "--workers", "2",
                        "--quiet"], check=True)

    def measure(name: str) -> float:
        cmd = [sys.executable, __file__, "--child", name, "--images", args.images, "--store", store,
               "--warmup", str(args.warmup), "--steps", str(args.steps), "--threads", str(args.threads),
               *common.set_args(args.set)]
        return common.child_value(cmd, name, "images_per_sec")

    results = common.interleaved(args.contenders, args.rounds, measure, "images/s")
    import torch

    med = common.medians(results)
    print(f"\n{date.today()} · {platform.machine()} · {os.cpu_count()} CPUs · {args.threads} threads · "
          f"torch {torch.__version__} · batch 256 · convnet5 {' '.join(args.set) or 'w32'} · {SIZE} px · "
          f"{args.steps} timed steps after "
          f"{args.warmup} · median of {args.rounds} interleaved rounds\n")
    print(common.ratio_table(results, "images/s", [("memory", "%"), ("imagefolder", "x")]))
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
