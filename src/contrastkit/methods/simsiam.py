"""SimSiam: simple Siamese representation learning (Chen & He 2021, arXiv:2011.10566).

Encoder + projector (BatchNorm on every layer, the output included) + bottleneck predictor;
the loss is the symmetrised negative cosine of each view's prediction against the other view's
stop-gradient projection. No negatives, no momentum encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from contrastkit.losses.byol import negative_cosine_loss
from contrastkit.methods.base import HeadOptions, ImageMethodOptions, StepOutput, TwoViewMethod
from contrastkit.methods.registry import register_method
from contrastkit.nn import MLPHead
from contrastkit.options import option


@dataclass
class SimSiamOptions(ImageMethodOptions):
    """SimSiam's options."""

    predictor_hidden_dim: int = option(32, "hidden width of the bottleneck predictor MLP", ge=1)


@register_method("simsiam", options=SimSiamOptions, tasks=("image",), paper="Chen & He 2021, arXiv:2011.10566")
class SimSiam(TwoViewMethod):
    """SimSiam: Siamese encoder + projector, predictor on one side, stop-gradient on the other.
    """

    Options = SimSiamOptions
    opts: SimSiamOptions
    default_head = HeadOptions(projection_layers=3)

    def build(self) -> None:
        dim = self.head.projection_dim
        self.projector = self.projection_head(last_batch_norm=True, bias=False)
        self.predictor = MLPHead(dim, self.opts.predictor_hidden_dim, dim, num_layers=2)

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        x1, x2 = self.views_of(batch, "SimSiam")
        n = x1.shape[0]
        z = self.projector(self.encoder(torch.cat([x1, x2])))
        p = self.predictor(z)
        z1, z2, p1, p2 = z[:n], z[n:], p[:n], p[n:]
        loss = (negative_cosine_loss(p1, z2) + negative_cosine_loss(p2, z1)) / 2
        return self.output(loss, z1, z2)
