"""MoCo v2 (He et al. 2020, arXiv:1911.05722; Chen et al. 2020, arXiv:2003.04297) and
MoCo v3 (Chen, Xie & He 2021, arXiv:2104.02057): a momentum key encoder, InfoNCE of queries
against its keys (v2: plus a FIFO queue of past keys; v3: a predictor, symmetric, no queue)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from contrastkit.losses import info_nce
from contrastkit.methods.base import (
    ContrastOptions,
    HeadOptions,
    MomentumOptions,
    StepOutput,
    TwoViewMethod,
)
from contrastkit.methods.registry import register_method
from contrastkit.negatives.distributed import gather_no_grad, rank_offset
from contrastkit.negatives.queue import KeyQueue
from contrastkit.nn import MLPHead
from contrastkit.nn.batchnorm import convert_split_batchnorm
from contrastkit.nn.momentum import MOMENTUM_SCHEDULES, MomentumEncoder
from contrastkit.options import option


@dataclass
class _MoCoOptions(ContrastOptions, MomentumOptions):
    bn_splits: int = option(
        1, "BatchNorm in this many groups, the key batch shuffled across them (ShuffleBN)", ge=1
    )


@dataclass
class MoCoV2Options(_MoCoOptions):
    """MoCo v2's options (paper defaults: 4096 queued keys, momentum 0.99 constant)."""

    momentum_final: float = option(0.99, "EMA momentum at the end of training", ge=0, le=1)
    momentum_schedule: str = option("constant", "momentum → momentum_final", choices=MOMENTUM_SCHEDULES)
    queue_size: int = option(4096, "FIFO queue of past keys used as negatives (0: none)", ge=0)
    symmetric: bool = option(True, "also contrast the swapped views (both key sets are queued)")
    in_batch_negatives: bool = option(False, "the batch's other keys are negatives too")


@dataclass
class MoCoV3Options(_MoCoOptions):
    """MoCo v3's options."""

    predictor_hidden_dim: int = option(512, "hidden width of the predictor MLP", ge=1)


class _MomentumContrast(TwoViewMethod):
    """Online encoder + projector, their EMA copy (the key encoder), and the contrast step."""

    opts: _MoCoOptions

    def build(self) -> None:
        o = self.opts
        self.projector = self.make_projector()
        self.encoder = convert_split_batchnorm(self.encoder, o.bn_splits)
        self.key_encoder = MomentumEncoder(
            nn.Sequential(self.encoder, self.projector), o.momentum, o.momentum_final, o.momentum_schedule
        )
        self.bn_splits = o.bn_splits

    def make_projector(self) -> nn.Module:
        return self.projection_head()

    def online(self, x: Tensor) -> Tensor:
        out: Tensor = self.projector(self.encoder(x))
        return out

    @torch.no_grad()
    def keys(self, x: Tensor) -> Tensor:
        """Key embeddings; with split BN the batch is shuffled across the BN groups first
        (ShuffleBN on one device) and un-shuffled after."""
        if self.bn_splits > 1:
            perm = torch.randperm(x.shape[0], device=x.device)
            k = self.key_encoder(x[perm])
            return torch.empty_like(k).index_copy_(0, perm, k)
        out: Tensor = self.key_encoder(x)
        return out

    def contrast(self, q: Tensor, k: Tensor, negative_keys: Tensor | None, in_batch: bool) -> Tensor:
        """InfoNCE of q_i against its key k_i; negatives: the queue, and the other keys of the
        (global, under DDP) batch when ``in_batch`` (otherwise weight 0, as in the original MoCo)."""
        n = q.shape[0]
        k = gather_no_grad(k)  # keys carry no gradient; every rank sees the global batch
        positives = torch.arange(n, device=q.device) + rank_offset(n)
        weights = None
        if not in_batch:
            m = k.shape[0] + (0 if negative_keys is None else negative_keys.shape[0])
            weights = torch.ones(n, m, device=q.device, dtype=torch.float32)
            weights[:, : k.shape[0]] = 0.0
        return info_nce(
            q,
            k,
            positive_index=positives,
            negative_keys=negative_keys,
            negative_weights=weights,
            check_values=False,
            **self.kernel_options(),
        )

    def on_step_end(self, step: int, total_steps: int) -> None:
        super().on_step_end(step, total_steps)
        self.key_encoder.update(nn.Sequential(self.encoder, self.projector), self.progress)


@register_method(
    "moco_v2", options=MoCoV2Options, tasks=("image",),
    paper="He et al. 2020, arXiv:1911.05722; Chen et al. 2020, arXiv:2003.04297",
)
class MoCoV2(_MomentumContrast):
    """MoCo v2: momentum key encoder and a FIFO queue of past keys as negatives.

    MLP projection head; the queue holds ``queue_size`` keys.

    ``symmetric`` adds the loss with the views swapped (both key sets are enqueued);
    ``in_batch_negatives`` also uses the batch's other keys as negatives. ``bn_splits`` > 1
    normalises that many groups separately and shuffles the key batch across them.
    """

    Options = MoCoV2Options
    opts: MoCoV2Options

    def build(self) -> None:
        super().build()
        o = self.opts
        self.queue = KeyQueue(o.queue_size, self.head.projection_dim) if o.queue_size > 0 else None
        self.symmetric = o.symmetric
        self.in_batch_negatives = o.in_batch_negatives

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        x1, x2 = self.views_of(batch, "MoCo v2")
        n = x1.shape[0]
        if self.symmetric:
            q = self.online(torch.cat([x1, x2]))
            q1, q2 = q[:n], q[n:]
            k = self.keys(torch.cat([x2, x1]))
            k2, k1 = k[:n], k[n:]
        else:
            q1 = self.online(x1)
            k2 = self.keys(x2)
        queue = self.queue.keys().clone() if self.queue is not None and len(self.queue) else None
        in_batch = self.in_batch_negatives or queue is None
        loss = self.contrast(q1, k2, queue, in_batch)
        if self.symmetric:
            loss = (loss + self.contrast(q2, k1, queue, in_batch)) / 2
        if self.queue is not None:  # the keys of every rank, so all queues stay identical
            self.queue.enqueue(gather_no_grad(torch.nn.functional.normalize(k2.float(), dim=1)))
            if self.symmetric:
                self.queue.enqueue(gather_no_grad(torch.nn.functional.normalize(k1.float(), dim=1)))
        return self.output(loss, q1, k2, momentum=self.key_encoder.current.clone())


@register_method("moco_v3", options=MoCoV3Options, tasks=("image",), paper="Chen, Xie & He 2021, arXiv:2104.02057")
class MoCoV3(_MomentumContrast):
    """MoCo v3: online projector + predictor against a momentum key encoder, in-batch keys.

    Symmetric InfoNCE over the batch's keys, scaled by 2·temperature as in the paper.
    """

    Options = MoCoV3Options
    opts: MoCoV3Options
    default_head = HeadOptions(projection_layers=3)

    def make_projector(self) -> nn.Module:
        return self.projection_head(last_batch_norm=True, last_affine=False)

    def build(self) -> None:
        super().build()
        dim = self.head.projection_dim
        self.predictor = MLPHead(
            dim, self.opts.predictor_hidden_dim, dim, num_layers=2, last_batch_norm=True, last_affine=False
        )

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        x1, x2 = self.views_of(batch, "MoCo v3")
        # the two views go through separately so BatchNorm statistics stay per view
        q1, q2 = self.predictor(self.online(x1)), self.predictor(self.online(x2))
        k1, k2 = self.keys(x1), self.keys(x2)
        scale = 2.0 * self.opts.temperature
        loss = scale * (self.contrast(q1, k2, None, True) + self.contrast(q2, k1, None, True))
        return self.output(loss, q1, q2, momentum=self.key_encoder.current.clone())
