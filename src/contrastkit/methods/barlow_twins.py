"""Barlow Twins (Zbontar et al. 2021, arXiv:2103.03230): make the cross-correlation of the
two views' projections close to the identity. No negatives, no momentum encoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contrastkit.losses.barlow_twins import barlow_twins_loss
from contrastkit.methods.base import HeadOptions, ImageMethodOptions, StepOutput, TwoViewMethod
from contrastkit.methods.registry import register_method
from contrastkit.negatives.distributed import gather_with_grad
from contrastkit.options import option


@dataclass
class BarlowTwinsOptions(ImageMethodOptions):
    """Barlow Twins' options."""

    barlow_lambda: float = option(0.0051, "weight λ of the off-diagonal (redundancy) terms", ge=0)


@register_method(
    "barlow_twins", options=BarlowTwinsOptions, tasks=("image",), paper="Zbontar et al. 2021, arXiv:2103.03230"
)
class BarlowTwins(TwoViewMethod):
    """Barlow Twins: an encoder + projector whose two views' cross-correlation → identity.
    """

    Options = BarlowTwinsOptions
    opts: BarlowTwinsOptions
    default_head = HeadOptions(projection_dim=512, projection_hidden_dim=512, projection_layers=3)

    def build(self) -> None:
        self.projector = self.projection_head()

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        x1, x2 = self.views_of(batch, "Barlow Twins")
        # each view separately: the loss standardises each view over its own batch
        z1 = self.projector(self.encoder(x1))
        z2 = self.projector(self.encoder(x2))
        # under DDP the statistics are those of the global batch (autograd-aware all-gather)
        loss = barlow_twins_loss(gather_with_grad(z1), gather_with_grad(z2), lambda_offdiag=self.opts.barlow_lambda)
        return self.output(loss, z1, z2)
