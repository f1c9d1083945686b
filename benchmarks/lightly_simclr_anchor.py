"""Anchor for the accuracy-at-a-budget benchmark: lightly's SimCLR on Fashion-MNIST.

Runs in an environment with `lightly` installed (the `bench` extra). Same 5-layer CNN (width from
the recipe), batch 256, projection →128→64, augmentations, temperature and optimiser as the
contrastkit recipe; lightly's own loss, projection head and multi-view transform on PIL images
through a DataLoader, as its users run it.
Trains for a wall-clock budget, then writes train/test features of the backbone to an .npz file
so that both runs are probed by the same evaluator.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from common import add_numbers, parser
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms.multi_view_transform import MultiViewTransform
from PIL import Image
from torch import nn

from contrastkit.data.image import read_idx


def convnet5(w: int = 32) -> nn.Sequential:
    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(1, w, 1), *block(w, 2 * w, 2), *block(2 * w, 2 * w, 1), *block(2 * w, 4 * w, 2),
        *block(4 * w, 4 * w, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )


class Images(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, transform: object) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> object:
        return self.transform(Image.fromarray(self.images[i], mode="L"))  # type: ignore[operator]


def two_view_loader(train_x: torch.Tensor, *, crop_min: float, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    """lightly's way: PIL images, torchvision transforms per image, DataLoader workers; the
    augmentations of the fashion-mnist-simclr recipe."""
    mean, std = float(train_x.mean() / 255), float(train_x.std() / 255)
    view = T.Compose([
        T.RandomResizedCrop(28, scale=(crop_min, 1.0)),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4)], p=0.8),
        T.RandomApply([T.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.2),
        T.ToTensor(),
        T.Normalize([mean], [std]),
    ])
    return torch.utils.data.DataLoader(
        Images(train_x, MultiViewTransform([view, view])), batch_size=batch_size, shuffle=True,
        drop_last=True, num_workers=workers, persistent_workers=workers > 0,
    )


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out", required=True, help="the .npz of train / test features and timings")
    add_numbers(ap, minutes=10.0, workers=1, temperature=0.2, lr=2e-3, width=32, crop_min=0.2)
    args = ap.parse_args()
    torch.manual_seed(0)
    root = Path(args.data)
    train_x = read_idx(root / "train-images-idx3-ubyte.gz")
    test_x = read_idx(root / "t10k-images-idx3-ubyte.gz")
    mean, std = float(train_x.mean() / 255), float(train_x.std() / 255)
    loader = two_view_loader(train_x, crop_min=args.crop_min, batch_size=256, workers=args.workers)
    backbone = convnet5(args.width)
    head = SimCLRProjectionHead(4 * args.width, 128, 64)
    model = nn.Sequential(backbone, head)
    crit = NTXentLoss(temperature=args.temperature)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    budget = 60 * args.minutes
    start, steps, pairs = time.perf_counter(), 0, 0
    done = False
    while not done:
        for (x1, x2) in loader:
            progress = (time.perf_counter() - start) / budget
            lr = args.lr * min(1.0, progress / 0.05) * 0.5 * (1 + np.cos(np.pi * min(progress, 1.0)))
            for g in opt.param_groups:
                g["lr"] = max(lr, 1e-6)
            loss = crit(model(x1), model(x2))
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            pairs += x1.shape[0]
            if time.perf_counter() - start >= budget:
                done = True
                break
    seconds = time.perf_counter() - start
    backbone.eval()

    def feats(x: np.ndarray) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), 1024):
                b = torch.from_numpy(x[i : i + 1024]).float().div(255).sub(mean).div(std).unsqueeze(1)
                out.append(backbone(b))
        return torch.cat(out).numpy()

    np.savez(args.out, train=feats(train_x), test=feats(test_x), seconds=seconds, steps=steps,
             pairs_per_sec=pairs / seconds, final_loss=float(loss.detach()))
    print(f"lightly: {steps} steps, {pairs / seconds:.0f} pairs/s, {seconds:.0f}s, loss {float(loss.detach()):.4f}")


if __name__ == "__main__":
    main()
