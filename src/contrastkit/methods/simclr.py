"""SimCLR: contrastive learning of visual representations (Chen et al. 2020, arXiv:2002.05709)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.losses import info_nce
from contrastkit.methods.base import (
    ContrastOptions,
    StepOutput,
    TwoViewMethod,
    contrast_across_ranks,
    encode_views,
)
from contrastkit.methods.registry import register_method
from contrastkit.negatives.distributed import gather_no_grad, world
from contrastkit.negatives.queue import KeyQueue
from contrastkit.options import option


@dataclass
class SimCLROptions(ContrastOptions):
    """SimCLR's options."""

    queue_size: int = option(0, "past projections kept as extra negatives, a memory bank (0: none)", ge=0)


@register_method("simclr", options=SimCLROptions, tasks=("image",), paper="Chen et al. 2020, arXiv:2002.05709")
class SimCLR(TwoViewMethod):
    """SimCLR: encoder + MLP projection head trained with NT-Xent over augmented views.

    Trained over V augmented views of each image.
    `forward(x)` returns the encoder representation (used for evaluation and export); the
    projection is used only by the loss. With V > 2 views every other view of the same image is
    a positive (multi-view InfoNCE, the same kernel as SupCon with instance labels); the views
    may come in several sizes (multi-crop, ``data.crops``: every view, global or local, is an
    anchor against all the others), encoded one call per size.
    ``negatives`` (a NegativeSampling) picks / weights the negatives; its schedule follows
    ``progress`` (step / total steps, updated in ``on_step_end``).

    Batch: ``training_step({"views": [x1, ..., xV]})``, V >= 2 augmented views of the same B
    images, each a float (B, C, H, W) tensor, normalised, on the model's device (e.g. calls of
    a :mod:`contrastkit.augment` augmentation on a uint8 batch), views of one size next to each
    other (multi-crop: global views first, then smaller local ones); other keys are ignored.
    """

    Options = SimCLROptions
    multi_crop = True
    opts: SimCLROptions

    def build(self) -> None:
        self.projector = self.projection_head()
        # optional memory bank: projections of past batches as extra negatives (as in MoCo)
        q = self.opts.queue_size
        self.queue = KeyQueue(q, self.head.projection_dim) if q > 0 else None

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        views: list[Tensor] = batch["views"]
        n, v = views[0].shape[0], len(views)
        z = self.projector(torch.cat(encode_views(self.encoder, views)))
        rank, world_size = world()
        kernel = self.kernel_options()
        if self.queue is not None and len(self.queue):
            kernel["negative_keys"] = self.queue.keys().clone()
        if world_size > 1:  # local rows against the keys of every rank
            ids = torch.arange(n, device=z.device) + rank * n
            loss = contrast_across_ranks(z, ids, v, **kernel)
        elif v == 2:
            idx = torch.arange(2 * n, device=z.device)
            loss = info_nce(z, positive_index=(idx + n) % (2 * n), check_values=False, **kernel)
        else:
            labels = torch.arange(n, device=z.device).repeat(v)
            loss = info_nce(z, labels=labels, check_values=False, **kernel)
        if self.queue is not None:  # every rank enqueues the global batch: identical queues
            keys = gather_no_grad(F.normalize(z.detach().float(), dim=1))
            # rank-major [rank][view][row] -> view-major, the order of one process on the whole batch
            keys = keys.view(world_size, v, n, -1).transpose(0, 1).reshape(-1, keys.shape[1])
            self.queue.enqueue(keys)
        return self.output(loss, z[:n], z[n : 2 * n])
