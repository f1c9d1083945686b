"""Batch loaders for text and image–text training with the generic Trainer's loader interface
(``__len__``, ``batch_size``, ``batches(epoch, start)``, ``state_dict``, ``load_state_dict``).

Order: a per-epoch permutation seeded by (seed, epoch). Random choices (text augmentations,
caption picks, image augmentations) come from one ``torch.Generator`` whose state is
checkpointed, so a resumed run sees the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrastkit.data.image.loader import Augment, augment_view, augmentation_generator
from contrastkit.data.text.augment import TextAugmentation
from contrastkit.errors import UserError

Tokenize = Callable[[Sequence[str]], dict[str, Tensor]]


def _check_batch(batch_size: int, n: int, what: str) -> None:
    if batch_size < 1 or n // batch_size == 0:
        raise UserError(
            f"train.batch_size {batch_size} is larger than the data set ({n} {what}); "
            f"use a batch size <= {n}"
        )


class _SeededLoader:
    """Per-epoch seeded order of n rows (this rank's share) in full batches, and the generator of
    the random choices."""

    def __init__(
        self, n: int, batch_size: int, seed: int, rank: int, world_size: int, what: str
    ) -> None:
        _check_batch(batch_size, n // world_size, what)
        self.n = n
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.generator = torch.Generator().manual_seed(seed * 1_000_003 + 29 + 7 * rank)

    def __len__(self) -> int:
        """Full batches per epoch of this rank's share (the last partial batch is dropped)."""
        return (self.n // self.world_size) // self.batch_size

    def permutation(self, epoch: int) -> Tensor:
        """This rank's slice of the epoch's permutation (the same permutation on every rank)."""
        gen = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        per_rank = self.n // self.world_size
        return torch.randperm(self.n, generator=gen)[self.rank * per_rank : (self.rank + 1) * per_rank]

    def _index_batches(self, epoch: int, start: int) -> Iterator[tuple[Tensor, list[int]]]:
        """(indices (B,), the same as a list) of the epoch's batches from batch `start` on."""
        perm = self.permutation(epoch)
        for b in range(start, len(self)):
            idx = perm[b * self.batch_size : (b + 1) * self.batch_size]
            yield idx, idx.tolist()

    def _rng(self) -> np.random.Generator:
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        return np.random.default_rng(seed)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].cpu())


class TextViewLoader(_SeededLoader):
    """Yields ``{"views": [ids (B, L)], "masks": [mask (B, L)], "index": (B,)}``.

    ``columns``: one list of texts (unsupervised: ``views`` copies of each sentence, each passed
    through ``augmentation`` if given, else identical so that dropout alone makes them differ)
    or 2–3 aligned lists (anchor, positive[, hard negative]: one view each).
    """

    def __init__(
        self,
        columns: Sequence[Sequence[str]],
        tokenize: Tokenize,
        *,
        batch_size: int,
        views: int = 2,
        augmentation: TextAugmentation | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not columns or any(len(c) != len(columns[0]) for c in columns):
            raise UserError(f"text columns must be non-empty and aligned; got lengths {[len(c) for c in columns]}")
        super().__init__(len(columns[0]), batch_size, seed, rank, world_size, "texts")
        self.columns = [list(c) for c in columns]
        self.tokenize = tokenize
        self.views = views if len(columns) == 1 else len(columns)
        self.augmentation = augmentation
        self.device = torch.device(device)

    def batches(self, epoch: int, start: int = 0) -> Iterator[dict[str, Any]]:
        for idx, rows in self._index_batches(epoch, start):
            ids: list[Tensor] = []
            masks: list[Tensor] = []
            if len(self.columns) == 1:
                texts = [self.columns[0][i] for i in rows]
                if self.augmentation is None:
                    enc = self.tokenize(texts)
                    pairs = [enc] * self.views
                else:
                    rng = self._rng()
                    pairs = [self.tokenize(self.augmentation(texts, rng)) for _ in range(self.views)]
            else:
                aug, pairs = self.augmentation, []
                rng = self._rng() if aug is not None else np.random.default_rng(0)
                for col in self.columns:
                    texts = [col[i] for i in rows]
                    pairs.append(self.tokenize(aug(texts, rng) if aug is not None else texts))
            for enc in pairs:
                ids.append(enc["input_ids"].to(self.device))
                masks.append(enc["attention_mask"].to(self.device))
            yield {"views": ids, "masks": masks, "index": idx.to(self.device)}


class ImageTextLoader(_SeededLoader):
    """Yields ``{"views": [images], "input_ids", "attention_mask", "caption_ids", "index"}``.

    ``captions(rows, rng)`` returns one caption per image row (e.g. a random template per
    image); ``caption_ids`` identify the caption text (a CRC-32, the same on every rank), so
    identical captions can be treated as positives of each other.
    """

    def __init__(
        self,
        images: Tensor,
        captions: Callable[[list[int], np.random.Generator], list[str]],
        tokenize: Tokenize,
        *,
        batch_size: int,
        augmentation: Augment,
        seed: int = 0,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(int(images.shape[0]), batch_size, seed, rank, world_size, "images")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.captions = captions
        self.tokenize = tokenize
        self.augmentation = augmentation
        self.channels_last = channels_last
        self.image_generator = augmentation_generator(self.device, seed, rank)

    def batches(self, epoch: int, start: int = 0) -> Iterator[dict[str, Any]]:
        for idx, rows in self._index_batches(epoch, start):
            texts = self.captions(rows, self._rng())
            enc = self.tokenize(texts)
            caption_ids = torch.tensor([zlib.crc32(t.encode("utf-8")) for t in texts], dtype=torch.long)
            images = self.images.index_select(0, idx.to(self.device))
            x = augment_view(self.augmentation, images, self.image_generator, self.channels_last)
            yield {
                "views": [x],
                "input_ids": enc["input_ids"].to(self.device),
                "attention_mask": enc["attention_mask"].to(self.device),
                "caption_ids": caption_ids.to(self.device),
                "index": idx.to(self.device),
            }

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "image_generator": self.image_generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.image_generator.set_state(state["image_generator"].cpu())
