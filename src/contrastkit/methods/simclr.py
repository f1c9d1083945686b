"""SimCLR: contrastive learning of visual representations (Chen et al. 2020, arXiv:2002.05709)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.losses import info_nce
from contrastkit.methods.base import StepOutput, TwoViewMethod, contrast_across_ranks
from contrastkit.negatives.distributed import gather_no_grad, world
from contrastkit.negatives.mining import NegativeSampling
from contrastkit.negatives.queue import KeyQueue
from contrastkit.nn import MLPHead


class SimCLR(TwoViewMethod):
    """Encoder + MLP projection head trained with NT-Xent over V augmented views of each image.

    `forward(x)` returns the encoder representation (used for evaluation and export); the
    projection is used only by the loss. With V > 2 views every other view of the same image is
    a positive (multi-view InfoNCE, the same kernel as SupCon with instance labels).
    ``negatives`` (a NegativeSampling) picks / weights the negatives; its schedule follows
    ``progress`` (step / total steps, updated in ``on_step_end``).
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        *,
        projection_dim: int = 128,
        projection_hidden_dim: int = 512,
        projection_layers: int = 2,
        projection_batch_norm: bool = True,
        temperature: float = 0.2,
        similarity: str = "cosine",
        negatives: NegativeSampling | None = None,
        queue_size: int = 0,
        diagnostics: bool = True,
    ) -> None:
        super().__init__(encoder, feature_dim, diagnostics=diagnostics)
        self.projector = MLPHead(
            feature_dim,
            projection_hidden_dim,
            projection_dim,
            num_layers=projection_layers,
            batch_norm=projection_batch_norm,
        )
        self.temperature = temperature
        self.similarity = similarity
        self.negatives = negatives
        # optional memory bank: projections of past batches as extra negatives (as in MoCo)
        self.queue = KeyQueue(queue_size, projection_dim) if queue_size > 0 else None

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        views: list[Tensor] = batch["views"]
        n, v = views[0].shape[0], len(views)
        z = self.projector(self.encoder(torch.cat(views, dim=0)))
        rank, world_size = world()
        kernel: dict[str, Any] = {"temperature": self.temperature, "similarity": self.similarity}
        if self.negatives is not None:
            kernel["negatives"] = self.negatives.at(self.progress)
        if self.queue is not None and len(self.queue):
            kernel["negative_keys"] = self.queue.keys().clone()
        if world_size > 1:  # local rows against the keys of every rank
            ids = torch.arange(n, device=z.device) + rank * n
            loss = contrast_across_ranks(z, ids, v, **kernel)
        elif v == 2:
            idx = torch.arange(2 * n, device=z.device)
            loss = info_nce(z, positive_index=(idx + n) % (2 * n), **kernel)
        else:
            labels = torch.arange(n, device=z.device).repeat(v)
            loss = info_nce(z, labels=labels, **kernel)
        if self.queue is not None:  # every rank enqueues the global batch: identical queues
            keys = gather_no_grad(F.normalize(z.detach().float(), dim=1))
            # rank-major [rank][view][row] -> view-major, the order of one process on the whole batch
            keys = keys.view(world_size, v, n, -1).transpose(0, 1).reshape(-1, keys.shape[1])
            self.queue.enqueue(keys)
        return StepOutput(loss=loss, logs=self.make_logs(loss, z[:n], z[n : 2 * n]))
