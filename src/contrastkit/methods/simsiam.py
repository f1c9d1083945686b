"""SimSiam: simple Siamese representation learning (Chen & He 2021, arXiv:2011.10566).

Encoder + projector (BatchNorm on every layer, the output included) + bottleneck predictor;
the loss is the symmetrised negative cosine of each view's prediction against the other view's
stop-gradient projection. No negatives, no momentum encoder.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from contrastkit.losses.byol import negative_cosine_loss
from contrastkit.methods.base import StepOutput, TwoViewMethod
from contrastkit.nn import MLPHead


class SimSiam(TwoViewMethod):
    """Siamese encoder + projector, predictor on one side, stop-gradient on the other."""

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        *,
        projection_dim: int = 128,
        projection_hidden_dim: int = 512,
        projection_layers: int = 3,
        predictor_hidden_dim: int = 32,
        diagnostics: bool = True,
    ) -> None:
        super().__init__(encoder, feature_dim, diagnostics=diagnostics)
        self.projector = MLPHead(
            feature_dim, projection_hidden_dim, projection_dim,
            num_layers=projection_layers, last_batch_norm=True, bias=False,
        )
        self.predictor = MLPHead(projection_dim, predictor_hidden_dim, projection_dim, num_layers=2)

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        x1, x2 = self.views_of(batch, "SimSiam")
        n = x1.shape[0]
        z = self.projector(self.encoder(torch.cat([x1, x2])))
        p = self.predictor(z)
        z1, z2, p1, p2 = z[:n], z[n:], p[:n], p[n:]
        loss = (negative_cosine_loss(p1, z2) + negative_cosine_loss(p2, z1)) / 2
        return StepOutput(loss=loss, logs=self.make_logs(loss, z1, z2))
