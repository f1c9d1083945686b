"""SwAV: swapping assignments between views (Caron et al. 2020, arXiv:2006.09882).

Each view's projection, L2-normalised, is scored against K prototypes (a linear layer without
bias whose rows are renormalised every step). The codes of the global views are soft
assignments that spread the batch evenly over the prototypes (Sinkhorn–Knopp on the scores,
no gradient); every other view, local views included, predicts a global view's code from its
own scores (cross-entropy of the code with the softmax of scores / temperature).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.losses._dtype import upcast
from contrastkit.methods.base import (
    ImageMethodOptions,
    StepClock,
    StepOutput,
    TwoViewMethod,
    encode_views,
    multi_crop_views,
    zero_gradient,
)
from contrastkit.methods.registry import register_method
from contrastkit.negatives.distributed import gather_no_grad, world
from contrastkit.negatives.queue import KeyQueue
from contrastkit.options import option


@dataclass
class SwAVOptions(ImageMethodOptions):
    """SwAV's options (paper defaults: 3000 prototypes, temperature 0.1, ε 0.05, 3 iterations)."""

    prototypes: int = option(3000, "number K of prototypes (cluster centres)", ge=1)
    temperature: float = option(0.1, "temperature of the softmax over prototype scores", gt=0)
    sinkhorn_epsilon: float = option(0.05, "entropic regularisation ε of Sinkhorn–Knopp (codes ∝ exp(score / ε))", gt=0)
    sinkhorn_iterations: int = option(3, "Sinkhorn–Knopp iterations", ge=1)
    queue_length: int = option(
        0, "past global-view projections (of all processes) added to the Sinkhorn batch for small batches (0: none)", ge=0
    )
    queue_start_step: int = option(0, "step from which projections enter the queue (used once it is full)", ge=0)
    freeze_prototypes_steps: int = option(0, "steps at the start during which the prototypes are not updated", ge=0)


def _sum_over_ranks(x: Tensor) -> Tensor:
    """``x`` summed over the processes (an all-reduce; the identity in one process)."""
    return gather_no_grad(x.unsqueeze(0)).sum(dim=0)


@torch.no_grad()
def sinkhorn_knopp(
    scores: Tensor, epsilon: float = 0.05, iterations: int = 3, shared: Tensor | None = None
) -> Tensor:
    """SwAV's codes (B, K) for the prototype ``scores`` (B, K) of this process's samples.

    ``Q = exp(scores / ε)ᵀ`` (K × B_total) is scaled so that its entries sum to 1, then, for
    ``iterations`` rounds, its rows to 1/K each (every prototype gets an equal share of the
    batch) and its columns to 1/B_total (every sample one unit); the result times B_total, so
    that each sample's code sums to 1. Under torch.distributed the batch is that of every
    process (row sums are summed over processes), as in the paper. ``shared`` (Q, K): scores of
    columns every process holds alike (a queue of past projections), counted once; their codes
    are not returned.
    """
    local = upcast(scores)
    extra = upcast(shared) if shared is not None else local.new_zeros(0, local.shape[1])
    # one constant for every column on every process: it cancels in the first normalisation
    top = torch.maximum(gather_no_grad(local.max().reshape(1)).max(), extra.max() if extra.numel() else local.max())
    q_local = torch.exp((local - top) / epsilon).t()  # K x B
    q_extra = torch.exp((extra - top) / epsilon).t()  # K x Q
    k = q_local.shape[0]
    total_columns = q_local.shape[1] * world()[1] + q_extra.shape[1]  # every process has as many rows
    mass = _sum_over_ranks(q_local.sum()) + q_extra.sum()
    q_local, q_extra = q_local / mass, q_extra / mass
    for _ in range(iterations):
        rows = _sum_over_ranks(q_local.sum(dim=1, keepdim=True)) + q_extra.sum(dim=1, keepdim=True)
        q_local, q_extra = q_local / (rows * k), q_extra / (rows * k)
        q_local = q_local / (q_local.sum(dim=0, keepdim=True) * total_columns)
        q_extra = q_extra / (q_extra.sum(dim=0, keepdim=True) * total_columns)
    return (q_local * total_columns).t()


def swapped_prediction_loss(scores: list[Tensor], codes: list[Tensor], temperature: float) -> Tensor:
    """SwAV's loss: the mean over global views i (``codes[i]``, B × K) and every other view
    v ≠ i (``scores[v]``) of the cross-entropy −Σ_k q_ik log softmax(s_v / τ)_k, averaged over
    the batch."""
    log_p = [F.log_softmax(upcast(s) / temperature, dim=1) for s in scores]
    total = scores[0].new_zeros((), dtype=torch.float32)
    for i, q in enumerate(codes):
        for v, lp in enumerate(log_p):
            if v != i:
                total = total - (q * lp).sum(dim=1).mean()
    return total / (len(codes) * (len(scores) - 1))


@register_method("swav", options=SwAVOptions, tasks=("image",), paper="Caron et al. 2020, arXiv:2006.09882")
class SwAV(TwoViewMethod):
    """SwAV: online clustering; each view predicts the Sinkhorn code of the other global views.

    Encoder + projection head, L2-normalised, scored against ``prototypes`` normalised
    prototypes. Codes come from the global views only (Sinkhorn–Knopp, ``sinkhorn_epsilon``,
    ``sinkhorn_iterations``, with a ``queue_length`` queue of past projections once it is full);
    every view, local ones included, predicts every other global view's code at
    ``temperature``. The prototypes keep their starting values for ``freeze_prototypes_steps``.
    With one queue for all global views (the paper keeps one per global view; the views are
    exchangeable), ``queue_length`` counts all its rows.

    Batch: ``training_step({"views": [g1, g2, ..., l1, ...], "global_views": G})``: G >= 2
    global views (the training size) and then any local views (smaller crops), augmented views
    of the same B images, each a float (B, C, H, W) tensor, normalised, on the model's device;
    without ``"global_views"`` every view is global (e.g. ``{"views": [x1, x2]}``).
    """

    multi_crop = True
    Options = SwAVOptions
    opts: SwAVOptions

    def build(self) -> None:
        o, dim = self.opts, self.head.projection_dim
        self.projector = self.projection_head()
        self.prototypes = nn.Linear(dim, o.prototypes, bias=False)
        self.normalize_prototypes()
        self.queue = KeyQueue(o.queue_length, dim) if o.queue_length > 0 else None
        self.clock = StepClock()

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        w = self.prototypes.weight
        w.copy_(F.normalize(w, dim=1))

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        o = self.opts
        views, n_global = multi_crop_views(batch, "SwAV")
        n = views[0].shape[0]
        self.normalize_prototypes()
        z = F.normalize(self.projector(torch.cat(encode_views(self.encoder, views))), dim=1)
        weight = self.prototypes.weight
        if self.clock.steps < o.freeze_prototypes_steps:
            weight = zero_gradient(weight)
        scores = F.linear(z, weight).chunk(len(views))
        queued = None
        if self.queue is not None and len(self.queue) == self.queue.size:
            queued = F.linear(self.queue.keys(), weight).detach()
        codes = [
            sinkhorn_knopp(scores[i].detach(), o.sinkhorn_epsilon, o.sinkhorn_iterations, shared=queued)
            for i in range(n_global)
        ]
        loss = swapped_prediction_loss(list(scores), codes, o.temperature)
        if self.queue is not None and self.clock.steps >= o.queue_start_step:
            # the global views of every process: the queues stay identical (their scores count once)
            keys = gather_no_grad(upcast(z[: n_global * n].detach()))
            # rank-major [rank][view][row] -> view-major, the order of one process on the whole batch
            keys = keys.view(world()[1], n_global, n, -1).transpose(0, 1).reshape(-1, keys.shape[1])
            self.queue.enqueue(keys)
        return self.output(loss, z[:n], z[n : 2 * n])

    def on_step_end(self, step: int, total_steps: int) -> None:
        super().on_step_end(step, total_steps)
        self.clock.advance(step, total_steps)
