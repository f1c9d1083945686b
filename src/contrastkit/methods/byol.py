"""BYOL: bootstrap your own latent (Grill et al. 2020, arXiv:2006.07733).

An online encoder + projector + predictor regresses the output of an EMA target encoder +
projector (normalised MSE, symmetrised), with the target momentum following a cosine schedule
from ``momentum`` (0.99 by default) to ``momentum_final`` (1). No negatives.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from contrastkit.losses.byol import normalized_mse_loss
from contrastkit.methods.base import StepOutput, TwoViewMethod
from contrastkit.nn import MLPHead
from contrastkit.nn.momentum import MomentumEncoder


class BYOL(TwoViewMethod):
    """Online network (encoder, projector, predictor) and its momentum target."""

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        *,
        projection_dim: int = 128,
        projection_hidden_dim: int = 512,
        projection_layers: int = 2,
        predictor_hidden_dim: int = 512,
        momentum: float = 0.99,
        momentum_final: float = 1.0,
        momentum_schedule: str = "cosine",
        diagnostics: bool = True,
    ) -> None:
        super().__init__(encoder, feature_dim, diagnostics=diagnostics)
        self.projector = MLPHead(feature_dim, projection_hidden_dim, projection_dim, num_layers=projection_layers)
        self.predictor = MLPHead(projection_dim, predictor_hidden_dim, projection_dim, num_layers=2)
        self.target = MomentumEncoder(
            nn.Sequential(self.encoder, self.projector), momentum, momentum_final, momentum_schedule
        )

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        x1, x2 = self.views_of(batch, "BYOL")
        n = x1.shape[0]
        z = self.projector(self.encoder(torch.cat([x1, x2])))
        p = self.predictor(z)
        with torch.no_grad():
            t = self.target(torch.cat([x2, x1]))  # targets for p1 and p2
        loss = normalized_mse_loss(p[:n], t[:n]) + normalized_mse_loss(p[n:], t[n:])
        logs = self.make_logs(loss, z[:n], z[n:], momentum=float(self.target.current))
        return StepOutput(loss=loss, logs=logs)

    def on_step_end(self, step: int, total_steps: int) -> None:
        super().on_step_end(step, total_steps)
        self.target.update(nn.Sequential(self.encoder, self.projector), self.progress)
