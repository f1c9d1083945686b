"""VICReg (Bardes, Ponce & LeCun 2022, arXiv:2105.04906): invariance between the two views'
projections, a variance hinge per dimension and decorrelated dimensions. No negatives."""

from __future__ import annotations

from typing import Any

from torch import nn

from contrastkit.losses.vicreg import vicreg_loss
from contrastkit.methods.base import StepOutput, TwoViewMethod
from contrastkit.negatives.distributed import gather_with_grad
from contrastkit.nn import MLPHead


class VICReg(TwoViewMethod):
    """Encoder + expander MLP trained with the VICReg loss (weights 25 / 25 / 1 by default)."""

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        *,
        projection_dim: int = 512,
        projection_hidden_dim: int = 512,
        projection_layers: int = 3,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        diagnostics: bool = True,
    ) -> None:
        super().__init__(encoder, feature_dim, diagnostics=diagnostics)
        self.projector = MLPHead(feature_dim, projection_hidden_dim, projection_dim, num_layers=projection_layers)
        self.weights = (sim_weight, var_weight, cov_weight)

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        x1, x2 = self.views_of(batch, "VICReg")
        z1 = self.projector(self.encoder(x1))
        z2 = self.projector(self.encoder(x2))
        sim, var, cov = self.weights
        # under DDP the statistics are those of the global batch (autograd-aware all-gather)
        loss, parts = vicreg_loss(
            gather_with_grad(z1), gather_with_grad(z2), sim_weight=sim, var_weight=var, cov_weight=cov
        )
        return StepOutput(loss=loss, logs=self.make_logs(loss, z1, z2, **parts))
