"""BYOL: bootstrap your own latent (Grill et al. 2020, arXiv:2006.07733).

An online encoder + projector + predictor regresses the output of an EMA target encoder +
projector (normalised MSE, symmetrised), with the target momentum following a cosine schedule
from ``momentum`` (0.99 by default) to ``momentum_final`` (1). No negatives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from contrastkit.losses.byol import normalized_mse_loss
from contrastkit.methods.base import MomentumOptions, StepOutput, TwoViewMethod
from contrastkit.methods.registry import register_method
from contrastkit.nn import MLPHead
from contrastkit.nn.momentum import MomentumEncoder
from contrastkit.options import option


@dataclass
class BYOLOptions(MomentumOptions):
    """BYOL's options."""

    predictor_hidden_dim: int = option(512, "hidden width of the predictor MLP", ge=1)


@register_method("byol", options=BYOLOptions, tasks=("image",), paper="Grill et al. 2020, arXiv:2006.07733")
class BYOL(TwoViewMethod):
    """BYOL: an online network (encoder, projector, predictor) regresses its momentum target.
    """

    Options = BYOLOptions
    opts: BYOLOptions

    def build(self) -> None:
        o, dim = self.opts, self.head.projection_dim
        self.projector = self.projection_head()
        self.predictor = MLPHead(dim, o.predictor_hidden_dim, dim, num_layers=2)
        self.target = MomentumEncoder(
            nn.Sequential(self.encoder, self.projector), o.momentum, o.momentum_final, o.momentum_schedule
        )

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        x1, x2 = self.views_of(batch, "BYOL")
        n = x1.shape[0]
        z = self.projector(self.encoder(torch.cat([x1, x2])))
        p = self.predictor(z)
        with torch.no_grad():
            t = self.target(torch.cat([x2, x1]))  # targets for p1 and p2
        loss = normalized_mse_loss(p[:n], t[:n]) + normalized_mse_loss(p[n:], t[n:])
        return self.output(loss, z[:n], z[n:], momentum=self.target.current.clone())

    def on_step_end(self, step: int, total_steps: int) -> None:
        super().on_step_end(step, total_steps)
        self.target.update(nn.Sequential(self.encoder, self.projector), self.progress)
