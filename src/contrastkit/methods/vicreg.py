"""VICReg (Bardes, Ponce & LeCun 2022, arXiv:2105.04906): invariance between the two views'
projections, a variance hinge per dimension and decorrelated dimensions. No negatives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contrastkit.losses.vicreg import vicreg_loss
from contrastkit.methods.base import HeadOptions, ImageMethodOptions, StepOutput, TwoViewMethod
from contrastkit.methods.registry import register_method
from contrastkit.negatives.distributed import gather_with_grad
from contrastkit.options import option


@dataclass
class VICRegOptions(ImageMethodOptions):
    """VICReg's options: the weights of its three terms."""

    vicreg_sim: float = option(25.0, "weight of the invariance (MSE) term", ge=0)
    vicreg_var: float = option(25.0, "weight of the variance hinge", ge=0)
    vicreg_cov: float = option(1.0, "weight of the covariance term", ge=0)


@register_method("vicreg", options=VICRegOptions, tasks=("image",), paper="Bardes, Ponce & LeCun 2022, arXiv:2105.04906")
class VICReg(TwoViewMethod):
    """VICReg: an encoder + expander MLP trained with variance–invariance–covariance terms.
    """

    Options = VICRegOptions
    opts: VICRegOptions
    default_head = HeadOptions(projection_dim=512, projection_hidden_dim=512, projection_layers=3)

    def build(self) -> None:
        self.projector = self.projection_head()

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        x1, x2 = self.views_of(batch, "VICReg")
        z1 = self.projector(self.encoder(x1))
        z2 = self.projector(self.encoder(x2))
        o = self.opts
        # under DDP the statistics are those of the global batch (autograd-aware all-gather)
        loss, parts = vicreg_loss(
            gather_with_grad(z1), gather_with_grad(z2), sim_weight=o.vicreg_sim, var_weight=o.vicreg_var, cov_weight=o.vicreg_cov
        )
        return self.output(loss, z1, z2, **parts)
