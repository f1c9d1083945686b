"""A generated JPEG image folder for the data benchmarks (benchmarks/data_prepare.py,
benchmarks/data_train_throughput.py): ``ROOT/cNN/NNNNNN.jpg``, one subfolder per class, images of
random width and height in [min_px, max_px], smooth random colour fields plus noise (so that JPEG
sizes and decode costs are those of photos rather than of flat colour), quality 90.

    python benchmarks/data_images.py --root /tmp/bench/jpegs --count 6000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def make_folder(root: Path, count: int, classes: int = 10, min_px: int = 96, max_px: int = 128, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    if (root / ".complete").is_file() and (root / ".complete").read_text() == f"{count} {classes} {min_px} {max_px} {seed}":
        return root
    for i in range(count):
        w, h = (int(v) for v in rng.integers(min_px, max_px + 1, size=2))
        low = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), dtype=np.int16)
        img = np.clip(img + rng.integers(-20, 21, size=img.shape), 0, 255).astype(np.uint8)
        folder = root / f"c{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:06d}.jpg", quality=90)
    (root / ".complete").write_text(f"{count} {classes} {min_px} {max_px} {seed}")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True)
    ap.add_argument("--count", type=int, default=6000)
    args = ap.parse_args()
    t0 = time.monotonic()
    make_folder(Path(args.root), args.count)
    print(f"{args.root}: {args.count} images in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()


# The SimCLR run of the data benchmarks: the cifar10-simclr recipe (its augmentations: crops of
# 20-100 %, flip, colour jitter 0.4/0.4/0.4/0.1 at p 0.8, grayscale at p 0.2) with a network small
# enough for a 2-core CPU (lightly's 5-layer CNN, width 32, projection 128 -> 64), AdamW, batch 256.
SIMCLR_RECIPE = "cifar10-simclr"
SIMCLR_OVERRIDES = [
    "model.encoder=convnet5",
    "model.width=32",
    "model.projection_hidden_dim=128",
    "model.projection_dim=64",
    "optim.name=adamw",
    "optim.lr=0.002",
    "optim.weight_decay=0.0001",
    "optim.scale_lr_by_batch=false",
    "optim.warmup_fraction=0.0",
    "train.batch_size=256",
    "train.progress=false",
    "train.checkpoint_every=1000000",
]
