"""What every method offers the trainer and the evaluation: a small interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from contrastkit.diagnostics import collapse_stats
from contrastkit.errors import UserError
from contrastkit.losses.info_nce import info_nce
from contrastkit.negatives.distributed import gather_no_grad, gather_with_grad, world


@dataclass
class StepOutput:
    """A training step's loss (to back-propagate) and scalar logs (for progress and CSV)."""

    loss: Tensor
    logs: dict[str, float] = field(default_factory=dict)


class Method(Protocol):
    """The trainer's view of a method: an nn.Module with an encoder and a training step."""

    encoder: nn.Module

    def training_step(self, batch: dict[str, Any]) -> StepOutput: ...

    def on_step_end(self, step: int, total_steps: int) -> None: ...


class TwoViewMethod(nn.Module):
    """Shared plumbing of the image methods: the encoder, ``forward`` (the representation used
    for evaluation and export), the training progress in [0, 1], and collapse diagnostics."""

    def __init__(self, encoder: nn.Module, feature_dim: int, *, diagnostics: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.feature_dim = feature_dim
        self.diagnostics = diagnostics
        self.progress = 0.0

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.encoder(x)
        return out

    @staticmethod
    def views_of(batch: dict[str, Any], name: str) -> tuple[Tensor, Tensor]:
        views: list[Tensor] = batch["views"]
        if len(views) != 2:
            raise UserError(f"{name} trains on exactly 2 views per image; set data.views=2 (got {len(views)})")
        return views[0], views[1]

    def make_logs(self, loss: Tensor, z1: Tensor, z2: Tensor, **extra: float) -> dict[str, float]:
        logs = {"loss": float(loss.detach()), **extra}
        if self.diagnostics:
            logs.update(collapse_stats(z1.detach(), z2.detach()))
        return logs

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.progress = min(1.0, (step + 1) / max(total_steps, 1))


def contrast_across_ranks(
    z: Tensor, sample_labels: Tensor, views: int, **kernel_kwargs: Any
) -> Tensor:
    """Multi-view InfoNCE of this rank's rows ``z`` (views stacked: [v1; v2; ...]) against the
    rows of every rank (SimCLR / SupCon under DDP). ``sample_labels`` (n,) must be unique across
    ranks for instance discrimination; each row's own key is left out of positives and denominator."""
    rank, _ = world()
    labels = sample_labels.repeat(views)
    keys = gather_with_grad(z)
    key_labels = gather_no_grad(labels)
    rows = torch.arange(z.shape[0], device=z.device)
    own = rows + rank * z.shape[0]
    mask = labels[:, None] == key_labels[None, :]
    mask[rows, own] = False
    extra = kernel_kwargs.get("negative_keys")
    columns = mask.shape[1] + (0 if extra is None else extra.shape[0])
    weights = torch.ones(mask.shape[0], columns, device=z.device, dtype=torch.float32)
    weights[rows, own] = 0.0
    return info_nce(z, keys, positive_mask=mask, negative_weights=weights, **kernel_kwargs)


def embedding_stats(z: Tensor, z2: Tensor | None = None) -> dict[str, float]:
    """Collapse diagnostics of a batch of embeddings (see contrastkit.diagnostics)."""
    return collapse_stats(z, z2)
