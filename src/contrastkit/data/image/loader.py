"""Batches of augmented views straight from an in-memory uint8 tensor (no DataLoader workers).

Indices come from a per-epoch permutation seeded by (seed, epoch); augmentation randomness comes
from one generator on the training device whose state is checkpointed, so a resumed run sees
exactly the batches the uninterrupted run would have seen.

With ``resident=False`` (a store's memory map, see contrastkit.data.image.store) the images stay
where they are: each batch reads its rows in sorted order (sequential reads of the file), is put
back in the permutation's order and only then moved to the device, so the batches are exactly
those of the resident loader.

:class:`ViewLoaderBase` holds what both share with the streaming folder loader
(contrastkit.data.image.stream.StreamViewLoader): permutation, sharding, generator, batch making.

Multi-crop (``crops``, a list of :class:`ViewGroup`): each group draws its count of views with
its own augmentation (its crop size and scale), the global group (the training size) first and
the local (smaller) groups after it, every view one batched call on the device from the same
checkpointed generator; ``batch["global_views"]`` says how many views are global.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from contrastkit.data.batching import SeededBatches
from contrastkit.data.image.augment import BatchAugmentation
from contrastkit.data.image.mapped import take

Augment = Callable[[Tensor, torch.Generator | None], Tensor]


def augmentation_generator(device: torch.device, seed: int, rank: int) -> torch.Generator:
    """The generator of the image augmentations of `rank` on `device` (seeded the same way in
    every loader, so a checkpointed state resumes the same stream)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + 17 * (rank + 1))
    return generator


def augment_view(
    augmentation: Augment, images: Tensor, generator: torch.Generator, channels_last: bool
) -> Tensor:
    """One augmented view of a batch, in channels-last memory format if asked."""
    view = augmentation(images, generator)
    return view.contiguous(memory_format=torch.channels_last) if channels_last else view


@dataclass(frozen=True)
class ViewGroup:
    """``count`` views of a batch drawn by ``augmentation`` (one size: its crop size)."""

    count: int
    augmentation: Augment


class ViewLoaderBase(SeededBatches):
    """What the view loaders share: the seeded per-epoch permutation sharded per rank, the
    augmentation generator (checkpointed) and the making of a batch from its uint8 images."""

    def __init__(
        self,
        count: int,
        *,
        batch_size: int,
        augmentation: BatchAugmentation | None = None,
        views: int = 2,
        crops: Sequence[ViewGroup] | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        labels: Tensor | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        """``views`` views of ``augmentation``, or (multi-crop) the views of the groups of
        ``crops``, the global group first; give one of ``augmentation`` and ``crops``."""
        if (augmentation is None) == (crops is None):
            raise ValueError("give a view loader either augmentation (and views) or crops, not both or neither")
        self.groups: list[ViewGroup] = list(crops or []) or [ViewGroup(views, augmentation)]  # type: ignore[arg-type]
        self.device = torch.device(device)
        self.count = count
        self.labels = labels.to(self.device) if labels is not None else None
        self.batch_size = batch_size
        self.augmentation = self.groups[0].augmentation
        self.views = sum(g.count for g in self.groups)
        self.global_views = self.groups[0].count
        self.seed = seed
        self.channels_last = channels_last
        self.rank = rank
        self.world_size = world_size
        self.generator = augmentation_generator(self.device, seed, rank)
        if len(self) == 0:
            from contrastkit.errors import UserError

            raise UserError(
                f"train.batch_size {batch_size} is larger than the data set "
                f"({count} images); use a batch size <= {count // world_size}"
            )

    def __len__(self) -> int:
        """Full batches per epoch (the last partial batch is dropped: BN and the loss want full batches)."""
        return (self.count // self.world_size) // self.batch_size

    def permutation(self, epoch: int) -> Tensor:
        gen = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        perm = torch.randperm(self.count, generator=gen)
        per_rank = self.count // self.world_size
        return perm[self.rank * per_rank : (self.rank + 1) * per_rank]

    def make_batch(self, x: Tensor, idx: Tensor) -> dict[str, Any]:
        """The batch of images `x` (on the device) at data set indices `idx` (on the device): its
        views group by group (global views first), in the order the generator draws them."""
        views = [
            augment_view(group.augmentation, x, self.generator, self.channels_last)
            for group in self.groups
            for _ in range(group.count)
        ]
        batch: dict[str, Any] = {"views": views, "index": idx, "global_views": self.global_views}
        if self.labels is not None:
            batch["labels"] = self.labels.index_select(0, idx)
        return batch


class InMemoryViewLoader(ViewLoaderBase):
    """Yields {'views': [V tensors (B,C,S,S)], 'index': (B,), 'global_views': G} for contrastive
    training (multi-crop: the G global views at the training size first, then the local ones)."""

    def __init__(self, images: Tensor, *, resident: bool = True, rows: Tensor | None = None, **kwargs: Any) -> None:
        """`kwargs`: those of :class:`ViewLoaderBase` (batch_size, augmentation, views, seed, ...).
        `rows` (not resident): the data set is these rows of `images` (index i reads row rows[i])."""
        if rows is not None and resident:
            images, rows = images.index_select(0, rows), None
        super().__init__(int(rows.numel()) if rows is not None else int(images.shape[0]), **kwargs)
        self.resident = resident
        self.rows = rows
        self.images = images.to(self.device) if resident else images

    def batches(self, epoch: int, start: int = 0) -> Iterator[dict[str, Any]]:
        perm = self.permutation(epoch)
        if self.resident:
            perm = perm.to(self.device)
        for b in range(start, len(self)):
            idx = perm[b * self.batch_size : (b + 1) * self.batch_size]
            if self.resident:
                x = self.images.index_select(0, idx)
            else:
                x = self._gather(idx)
                idx = idx.to(self.device)
            yield self.make_batch(x, idx)

    def _gather(self, idx: Tensor) -> Tensor:
        """Rows `idx` of the (memory-mapped) images, read in sorted order, on the device."""
        rows, order = (self.rows.index_select(0, idx) if self.rows is not None else idx).sort()
        x = torch.empty((idx.numel(), *self.images.shape[1:]), dtype=self.images.dtype)
        x[order] = take(self.images, rows)  # a store: pread, not through the map (mapped.py)
        if self.device.type == "cuda":
            x = x.pin_memory()
        return x.to(self.device, non_blocking=True)
