"""BYOL: bootstrap your own latent (Grill et al. 2020, arXiv:2006.07733).

An online encoder + projector + predictor regresses the output of an EMA target encoder +
projector (normalised MSE, symmetrised), with the target momentum following a cosine schedule
from ``momentum`` (0.99 by default) to ``momentum_final`` (1). No negatives.

Multi-crop (``data.crops``): the online network sees every view, the target the global views
only; the loss is the mean over every (online view, target global view) pair of two different
views, times two, so that two views give the symmetrised loss of the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from contrastkit.errors import UserError
from contrastkit.losses.byol import normalized_mse_loss
from contrastkit.methods.base import MomentumOptions, StepOutput, TwoViewMethod, encode_views, global_view_count
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

    Batch: ``training_step({"views": [x1, ..., xV], "global_views": G})``, V >= 2 augmented
    views of the same B images, each a float (B, C, H, W) tensor, normalised, on the model's
    device; the first G (default: all) are the global views, the target's inputs, and the others
    may be smaller (multi-crop local views); views of one size next to each other.
    """

    Options = BYOLOptions
    opts: BYOLOptions
    multi_crop = True

    def build(self) -> None:
        o, dim = self.opts, self.head.projection_dim
        self.projector = self.projection_head()
        self.predictor = MLPHead(dim, o.predictor_hidden_dim, dim, num_layers=2)
        self.target = MomentumEncoder(
            nn.Sequential(self.encoder, self.projector), o.momentum, o.momentum_final, o.momentum_schedule
        )

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        views: list[Tensor] = batch["views"]
        n, v, g = views[0].shape[0], len(views), global_view_count(batch)
        z = self.projector(torch.cat(encode_views(self.encoder, views)))
        p = self.predictor(z).split(n)
        with torch.no_grad():  # the global views in reverse order: two views give target([x2; x1]), as ever
            t = encode_views(self.target, views[:g][::-1])[::-1]
        pairs = [(i, j) for i in range(v) for j in range(g) if i != j]  # (online view, target view)
        if not pairs:
            raise UserError(f"BYOL trains on at least 2 views per image, one of them global; got {v} ({g} global)")
        loss = torch.stack([normalized_mse_loss(p[i], t[j]) for i, j in pairs]).mean() * 2
        return self.output(loss, z[:n], z[n : 2 * n], momentum=self.target.current.clone())

    def on_step_end(self, step: int, total_steps: int) -> None:
        super().on_step_end(step, total_steps)
        self.target.update(nn.Sequential(self.encoder, self.projector), self.progress)
