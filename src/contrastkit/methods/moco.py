"""MoCo v2 (He et al. 2020, arXiv:1911.05722; Chen et al. 2020, arXiv:2003.04297) and
MoCo v3 (Chen, Xie & He 2021, arXiv:2104.02057): a momentum key encoder, InfoNCE of queries
against its keys (v2: plus a FIFO queue of past keys; v3: a predictor, symmetric, no queue)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from contrastkit.losses import info_nce
from contrastkit.methods.base import StepOutput, TwoViewMethod
from contrastkit.negatives.distributed import gather_no_grad, rank_offset
from contrastkit.negatives.queue import KeyQueue
from contrastkit.nn import MLPHead
from contrastkit.nn.batchnorm import convert_split_batchnorm
from contrastkit.nn.momentum import MomentumEncoder


class _MomentumContrast(TwoViewMethod):
    """Online encoder + projector, their EMA copy (the key encoder), and the contrast step."""

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        projector: nn.Module,
        *,
        temperature: float,
        similarity: str,
        momentum: float,
        momentum_final: float,
        momentum_schedule: str,
        bn_splits: int,
        negatives: Any = None,
        diagnostics: bool = True,
    ) -> None:
        super().__init__(convert_split_batchnorm(encoder, bn_splits), feature_dim, diagnostics=diagnostics)
        self.projector = projector
        self.key_encoder = MomentumEncoder(
            nn.Sequential(self.encoder, self.projector), momentum, momentum_final, momentum_schedule
        )
        self.temperature = temperature
        self.similarity = similarity
        self.bn_splits = bn_splits
        self.negatives = negatives

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
        kwargs: dict[str, Any] = {}
        if self.negatives is not None:
            kwargs["negatives"] = self.negatives.at(self.progress)
        return info_nce(
            q,
            k,
            positive_index=positives,
            negative_keys=negative_keys,
            negative_weights=weights,
            temperature=self.temperature,
            similarity=self.similarity,
            **kwargs,
        )

    def on_step_end(self, step: int, total_steps: int) -> None:
        super().on_step_end(step, total_steps)
        self.key_encoder.update(nn.Sequential(self.encoder, self.projector), self.progress)


class MoCoV2(_MomentumContrast):
    """MoCo v2: MLP projection head, momentum key encoder, FIFO queue of ``queue_size`` keys.

    ``symmetric`` adds the loss with the views swapped (both key sets are enqueued);
    ``in_batch_negatives`` also uses the batch's other keys as negatives. ``bn_splits`` > 1
    normalises that many groups separately and shuffles the key batch across them.
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        *,
        projection_dim: int = 128,
        projection_hidden_dim: int = 512,
        projection_layers: int = 2,
        projection_batch_norm: bool = False,
        temperature: float = 0.2,
        similarity: str = "cosine",
        queue_size: int = 4096,
        momentum: float = 0.99,
        momentum_final: float = 0.99,
        momentum_schedule: str = "constant",
        symmetric: bool = True,
        in_batch_negatives: bool = False,
        bn_splits: int = 1,
        negatives: Any = None,
        diagnostics: bool = True,
    ) -> None:
        projector = MLPHead(
            feature_dim, projection_hidden_dim, projection_dim,
            num_layers=projection_layers, batch_norm=projection_batch_norm,
        )
        super().__init__(
            encoder, feature_dim, projector, temperature=temperature, similarity=similarity,
            momentum=momentum, momentum_final=momentum_final, momentum_schedule=momentum_schedule,
            bn_splits=bn_splits, negatives=negatives, diagnostics=diagnostics,
        )
        self.queue = KeyQueue(queue_size, projection_dim) if queue_size > 0 else None
        self.symmetric = symmetric
        self.in_batch_negatives = in_batch_negatives

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
        logs = self.make_logs(loss, q1, k2, momentum=float(self.key_encoder.current))
        return StepOutput(loss=loss, logs=logs)


class MoCoV3(_MomentumContrast):
    """MoCo v3: projector + predictor on the online side, momentum projector on the key side,
    symmetric InfoNCE over in-batch keys, scaled by 2·temperature as in the paper."""

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        *,
        projection_dim: int = 128,
        projection_hidden_dim: int = 512,
        projection_layers: int = 3,
        predictor_hidden_dim: int = 512,
        temperature: float = 0.2,
        similarity: str = "cosine",
        momentum: float = 0.99,
        momentum_final: float = 1.0,
        momentum_schedule: str = "cosine",
        bn_splits: int = 1,
        negatives: Any = None,
        diagnostics: bool = True,
    ) -> None:
        projector = MLPHead(
            feature_dim, projection_hidden_dim, projection_dim,
            num_layers=projection_layers, last_batch_norm=True, last_affine=False,
        )
        super().__init__(
            encoder, feature_dim, projector, temperature=temperature, similarity=similarity,
            momentum=momentum, momentum_final=momentum_final, momentum_schedule=momentum_schedule,
            bn_splits=bn_splits, negatives=negatives, diagnostics=diagnostics,
        )
        self.predictor = MLPHead(
            projection_dim, predictor_hidden_dim, projection_dim,
            num_layers=2, last_batch_norm=True, last_affine=False,
        )

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        x1, x2 = self.views_of(batch, "MoCo v3")
        # the two views go through separately so BatchNorm statistics stay per view
        q1, q2 = self.predictor(self.online(x1)), self.predictor(self.online(x2))
        k1, k2 = self.keys(x1), self.keys(x2)
        scale = 2.0 * self.temperature
        loss = scale * (self.contrast(q1, k2, None, True) + self.contrast(q2, k1, None, True))
        logs = self.make_logs(loss, q1, q2, momentum=float(self.key_encoder.current))
        return StepOutput(loss=loss, logs=logs)
