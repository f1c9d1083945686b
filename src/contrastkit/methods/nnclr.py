"""NNCLR: nearest-neighbour contrastive learning (Dwibedi et al. 2021, arXiv:2104.14548).

InfoNCE in which the positive of a view's prediction is not the other view's projection but
that projection's nearest neighbour (cosine) in a support set: a FIFO queue of the projections
of past batches. The neighbour carries no gradient; the predictions of the batch are the keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.losses._dtype import upcast
from contrastkit.losses.info_nce import info_nce
from contrastkit.methods.base import (
    ContrastOptions,
    HeadOptions,
    StepOutput,
    TwoViewMethod,
    encode_views,
    multi_crop_views,
)
from contrastkit.methods.registry import register_method
from contrastkit.negatives.distributed import gather_no_grad, gather_with_grad, rank_offset
from contrastkit.negatives.queue import KeyQueue
from contrastkit.nn import MLPHead
from contrastkit.options import option


@dataclass
class NNCLROptions(ContrastOptions):
    """NNCLR's options (paper: temperature 0.1, a support set of 98304 for batches of 4096)."""

    temperature: float = option(0.1, "InfoNCE temperature τ", gt=0)
    support_set_size: int = option(16384, "projections of past batches (of all processes) searched for neighbours", ge=1)
    predictor_hidden_dim: int = option(512, "hidden width of the predictor MLP", ge=1)


@torch.no_grad()
def nearest_neighbours(z: Tensor, support: Tensor) -> Tensor:
    """For each row of ``z`` (N, D), the row of ``support`` (M, D) of highest cosine similarity,
    L2-normalised (N, D)."""
    zn, sn = F.normalize(upcast(z), dim=1), F.normalize(upcast(support), dim=1)
    return sn.index_select(0, (zn @ sn.t()).argmax(dim=1))


@register_method("nnclr", options=NNCLROptions, tasks=("image",), paper="Dwibedi et al. 2021, arXiv:2104.14548")
class NNCLR(TwoViewMethod):
    """NNCLR: InfoNCE with each view's nearest neighbour in a support set as the positive.

    Encoder + projection head + predictor. For every global view i and every other view v, the
    nearest neighbour NN(z_i) of z_i in the support set (``support_set_size`` past projections,
    cosine) is the query; its key is p_v, the prediction of the same image's view v, and the
    predictions of the batch's other images (of every process) are the negatives (InfoNCE at
    ``temperature``). With two views: (L(NN(z1), p2) + L(NN(z2), p1)) / 2. After the step the
    support set takes the first view's projections of every process. At the first step, with
    an empty support set, each projection is its own neighbour.

    Batch: ``training_step({"views": [g1, g2, ..., l1, ...], "global_views": G})``: G >= 2
    global views (the training size) and then any local views (smaller crops), augmented views
    of the same B images, each a float (B, C, H, W) tensor, normalised, on the model's device;
    without ``"global_views"`` every view is global (e.g. ``{"views": [x1, x2]}``).
    """

    multi_crop = True
    Options = NNCLROptions
    opts: NNCLROptions
    default_head = HeadOptions(projection_layers=3)

    def build(self) -> None:
        dim = self.head.projection_dim
        self.projector = self.projection_head()
        self.predictor = MLPHead(dim, self.opts.predictor_hidden_dim, dim, num_layers=2)
        self.support = KeyQueue(self.opts.support_set_size, dim)

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        views, n_global = multi_crop_views(batch, "NNCLR")
        n = views[0].shape[0]
        z = self.projector(torch.cat(encode_views(self.encoder, views)))
        p = self.predictor(z).chunk(len(views))
        zs = z.chunk(len(views))
        support = self.support.keys() if len(self.support) else None
        kernel = self.kernel_options()
        positives = torch.arange(n, device=z.device) + rank_offset(n)
        keys = [gather_with_grad(pv) for pv in p]  # the batch of every process: its negatives
        loss = z.new_zeros((), dtype=torch.float32)
        for i in range(n_global):
            query = nearest_neighbours(zs[i], support) if support is not None else F.normalize(upcast(zs[i].detach()), dim=1)
            for v in range(len(views)):
                if v != i:
                    loss = loss + info_nce(query, keys[v], positive_index=positives, check_values=False, **kernel)
        loss = loss / (n_global * (len(views) - 1))
        self.support.enqueue(gather_no_grad(F.normalize(upcast(zs[0].detach()), dim=1)))
        return self.output(loss, zs[0], zs[1])
