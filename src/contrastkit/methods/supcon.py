"""Supervised contrastive learning (Khosla et al. 2020, arXiv:2004.11362) and its
semi-supervised use: samples of the same label are positives of each other; samples without a
label (-1) fall back to instance discrimination (their own other views are the positives)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from contrastkit.losses import info_nce
from contrastkit.methods.base import (
    ContrastOptions,
    StepOutput,
    TwoViewMethod,
    contrast_across_ranks,
    encode_views,
)
from contrastkit.methods.registry import register_method
from contrastkit.negatives.distributed import world
from contrastkit.options import option

FRESH_LABELS = 1 << 40  # ids of unlabeled samples start here, far above any class id


def semi_supervised_labels(labels: Tensor | None, n: int, device: torch.device, offset: int = 0) -> Tensor:
    """Per-sample labels for the kernel: the class where known, a fresh id (unique in the global
    batch: ``offset`` is the rank's first row, above every class id) for unlabeled samples (label
    < 0) or when no labels are given."""
    index = torch.arange(n, device=device) + offset
    if labels is None:
        return index
    labels = labels.to(device=device, dtype=torch.long)
    return torch.where(labels >= 0, labels, FRESH_LABELS + index)


@dataclass
class SupConOptions(ContrastOptions):
    """SupCon's options (its labels come from the data; ``data.label_fraction`` hides some)."""

    temperature: float = option(0.1, "InfoNCE temperature τ", gt=0)


@register_method(
    "supcon", options=SupConOptions, tasks=("image",), paper="Khosla et al. 2020, arXiv:2004.11362",
    uses_labels=True,
)
class SupCon(TwoViewMethod):
    """Supervised (or semi-supervised) contrastive learning: same-label images are positives.

    Encoder + projection head trained with the multi-positive InfoNCE (SupCon "L_out") over all
    views of the batch; ``batch['labels']`` (-1 = unlabeled) chooses the positives.

    Batch: ``training_step({"views": [x1, ..., xV], "labels": y})``, V >= 2 augmented views of
    the same B images, each a float (B, C, H, W) tensor, normalised, on the model's device (views
    of several sizes too: multi-crop, global views first, encoded one call per size), and
    ``labels`` an integer (B,) tensor of class ids (-1: unlabeled, its own class; without
    ``"labels"`` every image is its own class, i.e. SimCLR).
    """

    Options = SupConOptions
    opts: SupConOptions
    multi_crop = True

    def build(self) -> None:
        self.projector = self.projection_head()

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        views: list[Tensor] = batch["views"]
        n, v = views[0].shape[0], len(views)
        z = self.projector(torch.cat(encode_views(self.encoder, views)))
        labels = batch.get("labels")
        rank, world_size = world()
        per_sample = semi_supervised_labels(labels, n, z.device, offset=rank * n)
        kwargs = self.kernel_options()
        if world_size > 1:
            loss = contrast_across_ranks(z, per_sample, v, **kwargs)
        else:
            loss = info_nce(z, labels=per_sample.repeat(v), check_values=False, **kwargs)
        labeled = (labels >= 0).float().mean() if labels is not None else 0.0
        return self.output(loss, z[:n], z[n : 2 * n], labeled=labeled)
