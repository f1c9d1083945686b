"""Supervised contrastive learning (Khosla et al. 2020, arXiv:2004.11362) and its
semi-supervised use: samples of the same label are positives of each other; samples without a
label (-1) fall back to instance discrimination (their own other views are the positives)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from contrastkit.losses import info_nce
from contrastkit.methods.base import StepOutput, TwoViewMethod, contrast_across_ranks
from contrastkit.negatives.distributed import world
from contrastkit.nn import MLPHead

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


class SupCon(TwoViewMethod):
    """Encoder + projection head trained with the multi-positive InfoNCE (SupCon "L_out") over
    all views of the batch; ``batch['labels']`` (-1 = unlabeled) chooses the positives."""

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        *,
        projection_dim: int = 128,
        projection_hidden_dim: int = 512,
        projection_layers: int = 2,
        projection_batch_norm: bool = True,
        temperature: float = 0.1,
        similarity: str = "cosine",
        negatives: Any = None,
        diagnostics: bool = True,
    ) -> None:
        super().__init__(encoder, feature_dim, diagnostics=diagnostics)
        self.projector = MLPHead(
            feature_dim, projection_hidden_dim, projection_dim,
            num_layers=projection_layers, batch_norm=projection_batch_norm,
        )
        self.temperature = temperature
        self.similarity = similarity
        self.negatives = negatives

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        views: list[Tensor] = batch["views"]
        n, v = views[0].shape[0], len(views)
        z = self.projector(self.encoder(torch.cat(views, dim=0)))
        labels = batch.get("labels")
        rank, world_size = world()
        per_sample = semi_supervised_labels(labels, n, z.device, offset=rank * n)
        kwargs: dict[str, Any] = {"temperature": self.temperature, "similarity": self.similarity}
        if self.negatives is not None:
            kwargs["negatives"] = self.negatives.at(self.progress)
        if world_size > 1:
            loss = contrast_across_ranks(z, per_sample, v, **kwargs)
        else:
            loss = info_nce(z, labels=per_sample.repeat(v), **kwargs)
        labeled = float((labels >= 0).float().mean()) if labels is not None else 0.0
        return StepOutput(loss=loss, logs=self.make_logs(loss, z[:n], z[n : 2 * n], labeled=labeled))
