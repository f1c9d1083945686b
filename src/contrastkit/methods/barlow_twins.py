"""Barlow Twins (Zbontar et al. 2021, arXiv:2103.03230): make the cross-correlation of the
two views' projections close to the identity. No negatives, no momentum encoder."""

from __future__ import annotations

from typing import Any

from torch import nn

from contrastkit.losses.barlow_twins import barlow_twins_loss
from contrastkit.methods.base import StepOutput, TwoViewMethod
from contrastkit.negatives.distributed import gather_with_grad
from contrastkit.nn import MLPHead


class BarlowTwins(TwoViewMethod):
    """Encoder + projector (BatchNorm and ReLU between layers) trained with the Barlow Twins loss."""

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        *,
        projection_dim: int = 512,
        projection_hidden_dim: int = 512,
        projection_layers: int = 3,
        lambda_offdiag: float = 0.0051,
        diagnostics: bool = True,
    ) -> None:
        super().__init__(encoder, feature_dim, diagnostics=diagnostics)
        self.projector = MLPHead(feature_dim, projection_hidden_dim, projection_dim, num_layers=projection_layers)
        self.lambda_offdiag = lambda_offdiag

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        x1, x2 = self.views_of(batch, "Barlow Twins")
        # each view separately: the loss standardises each view over its own batch
        z1 = self.projector(self.encoder(x1))
        z2 = self.projector(self.encoder(x2))
        # under DDP the statistics are those of the global batch (autograd-aware all-gather)
        loss = barlow_twins_loss(gather_with_grad(z1), gather_with_grad(z2), lambda_offdiag=self.lambda_offdiag)
        return StepOutput(loss=loss, logs=self.make_logs(loss, z1, z2))
