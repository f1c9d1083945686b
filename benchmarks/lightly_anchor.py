"""Anchor for the accuracy-at-a-budget benchmark: lightly's SimCLR, SwAV, DINO or NNCLR on Fashion-MNIST.

Runs in an environment with `lightly` installed (the `bench` extra). Same 5-layer CNN (width from
the recipe), batch, heads' sizes, augmentations, crops, temperatures and optimiser as the
contrastkit recipe (benchmarks/fashion_mnist_budget.py passes them); lightly's own losses, heads,
memory banks and momentum updates on PIL images through a DataLoader, as its users run it.
Trains for a wall-clock budget, then writes train/test features of the backbone to an .npz file
so that both runs are probed by the same evaluator.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from common import add_numbers, parser
from lightly.loss import DINOLoss, NTXentLoss, SwaVLoss
from lightly.models.modules import (
    DINOProjectionHead,
    NNCLRPredictionHead,
    NNCLRProjectionHead,
    NNMemoryBankModule,
    SimCLRProjectionHead,
    SwaVProjectionHead,
    SwaVPrototypes,
)
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms.multi_view_transform import MultiViewTransform
from PIL import Image
from torch import Tensor, nn

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


def view_transform(size: int, scale: tuple[float, float], mean: float, std: float) -> T.Compose:
    """One view: the augmentations of the fashion-mnist recipes, per PIL image."""
    return T.Compose([
        T.RandomResizedCrop(size, scale=scale),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4)], p=0.8),
        T.RandomApply([T.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.2),
        T.ToTensor(),
        T.Normalize([mean], [std]),
    ])


def view_loader(train_x: np.ndarray, *, crop_min: float, local_crops: int, local_size: int, local_scale: tuple[float, float],
                batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    """lightly's way: PIL images, torchvision transforms per image, DataLoader workers; two global
    views at 28 px and ``local_crops`` local views at ``local_size``."""
    mean, std = float(train_x.mean() / 255), float(train_x.std() / 255)
    views = [view_transform(28, (crop_min, 1.0), mean, std)] * 2
    views += [view_transform(local_size, local_scale, mean, std)] * local_crops
    return torch.utils.data.DataLoader(
        Images(train_x, MultiViewTransform(views)), batch_size=batch_size, shuffle=True,
        drop_last=True, num_workers=workers, persistent_workers=workers > 0,
    )


def two_view_loader(train_x: np.ndarray, *, crop_min: float, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    """The two-view loader of the SimCLR anchor (benchmarks/train_throughput.py times it)."""
    return view_loader(train_x, crop_min=crop_min, local_crops=0, local_size=28, local_scale=(0.05, 0.4),
                       batch_size=batch_size, workers=workers)


Step = Callable[[list[Tensor], float], Tensor]


def simclr(backbone: nn.Module, feat: int, a: object) -> tuple[nn.Module, Step]:
    head = SimCLRProjectionHead(feat, a.hidden, a.out_dim)  # type: ignore[attr-defined]
    crit = NTXentLoss(temperature=a.temperature)  # type: ignore[attr-defined]
    model = nn.Sequential(backbone, head)
    return model, lambda views, progress: crit(model(views[0]), model(views[1]))


def swav(backbone: nn.Module, feat: int, a: object) -> tuple[nn.Module, Step]:
    head = SwaVProjectionHead(feat, a.hidden, a.out_dim)  # type: ignore[attr-defined]
    protos = SwaVPrototypes(a.out_dim, a.prototypes, a.freeze_prototypes_steps)  # type: ignore[attr-defined]
    crit = SwaVLoss(temperature=a.temperature, sinkhorn_iterations=a.sinkhorn_iterations,  # type: ignore[attr-defined]
                    sinkhorn_epsilon=a.sinkhorn_epsilon)  # type: ignore[attr-defined]
    model = nn.ModuleDict({"backbone": backbone, "head": head, "prototypes": protos})
    steps = [0]

    def step(views: list[Tensor], progress: float) -> Tensor:
        protos.normalize()
        outs = [protos(nn.functional.normalize(head(backbone(v)), dim=1), steps[0]) for v in views]
        steps[0] += 1
        return crit(outs[:2], outs[2:])

    return model, step


def dino(backbone: nn.Module, feat: int, a: object) -> tuple[nn.Module, Step]:
    def new_head() -> nn.Module:
        return DINOProjectionHead(feat, a.hidden, a.bottleneck, a.prototypes, freeze_last_layer=-1)  # type: ignore[attr-defined]

    student = nn.Sequential(backbone, new_head())
    teacher = nn.Sequential(copy.deepcopy(backbone), new_head())  # the weight-normed head cannot be deep-copied
    teacher.load_state_dict(student.state_dict())
    deactivate_requires_grad(teacher)
    warm = max(1, round(100 * a.warmup_fraction))  # type: ignore[attr-defined]  # "epochs" = percent of the budget
    crit = DINOLoss(output_dim=a.prototypes, warmup_teacher_temp=a.warmup_teacher_temp,  # type: ignore[attr-defined]
                    teacher_temp=a.teacher_temp, warmup_teacher_temp_epochs=warm,  # type: ignore[attr-defined]
                    student_temp=a.temperature)  # type: ignore[attr-defined]

    def step(views: list[Tensor], progress: float) -> Tensor:
        m = 1 - (1 - a.momentum) * (np.cos(np.pi * min(progress, 1.0)) + 1) / 2  # type: ignore[attr-defined]
        update_momentum(student, teacher, m)
        with torch.no_grad():
            t_out = [teacher(v) for v in views[:2]]
        s_out = [student(v) for v in views]
        return crit(t_out, s_out, epoch=int(100 * progress))

    return nn.ModuleDict({"student": student, "teacher": teacher}), step


def nnclr(backbone: nn.Module, feat: int, a: object) -> tuple[nn.Module, Step]:
    proj = NNCLRProjectionHead(feat, a.hidden, a.out_dim)  # type: ignore[attr-defined]
    pred = NNCLRPredictionHead(a.out_dim, a.hidden, a.out_dim)  # type: ignore[attr-defined]
    bank = NNMemoryBankModule(size=(a.queue, a.out_dim))  # type: ignore[attr-defined]
    crit = NTXentLoss(temperature=a.temperature)  # type: ignore[attr-defined]

    def step(views: list[Tensor], progress: float) -> Tensor:
        z0, z1 = proj(backbone(views[0])), proj(backbone(views[1]))
        p0, p1 = pred(z0), pred(z1)
        n0 = bank(z0.detach(), update=False)
        n1 = bank(z1.detach(), update=True)
        return 0.5 * (crit(n0, p1) + crit(n1, p0))

    return nn.ModuleDict({"backbone": backbone, "proj": proj, "pred": pred}), step


METHODS = {"simclr": simclr, "swav": swav, "dino": dino, "nnclr": nnclr}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out", required=True, help="the .npz of train / test features and timings")
    ap.add_argument("--method", choices=sorted(METHODS), default="simclr")
    add_numbers(ap, minutes=10.0, workers=1, temperature=0.2, lr=2e-3, weight_decay=1e-4, width=32, crop_min=0.2,
                batch_size=256, hidden=128, out_dim=64, bottleneck=64, prototypes=512, queue=4096,
                local_crops=0, local_size=14, local_scale_min=0.05, local_scale_max=0.4,
                sinkhorn_iterations=3, sinkhorn_epsilon=0.05, freeze_prototypes_steps=0,
                teacher_temp=0.04, warmup_teacher_temp=0.04, warmup_fraction=0.3, momentum=0.996, seed=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    root = Path(args.data)
    train_x = read_idx(root / "train-images-idx3-ubyte.gz")
    test_x = read_idx(root / "t10k-images-idx3-ubyte.gz")
    mean, std = float(train_x.mean() / 255), float(train_x.std() / 255)
    loader = view_loader(train_x, crop_min=args.crop_min, local_crops=args.local_crops, local_size=args.local_size,
                         local_scale=(args.local_scale_min, args.local_scale_max), batch_size=args.batch_size,
                         workers=args.workers)
    backbone = convnet5(args.width)
    model, step = METHODS[args.method](backbone, 4 * args.width, args)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=args.weight_decay)
    budget = 60 * args.minutes
    start, steps, images = time.perf_counter(), 0, 0
    done = False
    while not done:
        for views in loader:
            progress = (time.perf_counter() - start) / budget
            lr = args.lr * min(1.0, progress / 0.05) * 0.5 * (1 + np.cos(np.pi * min(progress, 1.0)))
            for g in opt.param_groups:
                g["lr"] = max(lr, 1e-6)
            loss = step(views, progress)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            images += views[0].shape[0]
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
             pairs_per_sec=images / seconds, final_loss=float(loss.detach()))
    final = float(loss.detach())
    print(f"lightly {args.method}: {steps} steps, {images / seconds:.0f} images/s, {seconds:.0f}s, loss {final:.4f}")


if __name__ == "__main__":
    main()
