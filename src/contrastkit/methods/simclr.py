"""SimCLR: contrastive learning of visual representations (Chen et al. 2020, arXiv:2002.05709)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from contrastkit.losses import info_nce
from contrastkit.methods.base import StepOutput, embedding_stats
from contrastkit.nn import MLPHead


class SimCLR(nn.Module):
    """Encoder + MLP projection head trained with NT-Xent over V augmented views of each image.

    `forward(x)` returns the encoder representation (used for evaluation and export); the
    projection is used only by the loss. With V > 2 views every other view of the same image is
    a positive (multi-view InfoNCE, the same kernel as SupCon with instance labels).
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        *,
        projection_dim: int = 128,
        projection_hidden_dim: int = 512,
        projection_layers: int = 2,
        projection_batch_norm: bool = True,
        temperature: float = 0.2,
        similarity: str = "cosine",
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.feature_dim = feature_dim
        self.projector = MLPHead(
            feature_dim,
            projection_hidden_dim,
            projection_dim,
            num_layers=projection_layers,
            batch_norm=projection_batch_norm,
        )
        self.temperature = temperature
        self.similarity = similarity

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.encoder(x)
        return out

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        views: list[Tensor] = batch["views"]
        n, v = views[0].shape[0], len(views)
        z = self.projector(self.encoder(torch.cat(views, dim=0)))
        if v == 2:
            idx = torch.arange(2 * n, device=z.device)
            loss = info_nce(
                z,
                positive_index=(idx + n) % (2 * n),
                temperature=self.temperature,
                similarity=self.similarity,
            )
        else:
            labels = torch.arange(n, device=z.device).repeat(v)
            loss = info_nce(z, labels=labels, temperature=self.temperature, similarity=self.similarity)
        logs = {"loss": float(loss.detach())}
        logs.update(embedding_stats(z.detach()))
        return StepOutput(loss=loss, logs=logs)

    def on_step_end(self, step: int, total_steps: int) -> None:
        """SimCLR has no momentum encoder or schedule of its own."""
