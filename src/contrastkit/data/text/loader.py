"""Batch loaders for text and image–text training with the generic Trainer's loader interface
(``__len__``, ``batch_size``, ``batches(epoch, start)``, ``state_dict``, ``load_state_dict``).

Order: a per-epoch permutation seeded by (seed, epoch); text batches may instead be drawn without
duplicate texts (``batch_sampler="no_duplicates"``, :func:`no_duplicate_batches`). Random choices (text augmentations,
caption picks, image augmentations) come from one ``torch.Generator`` whose state is
checkpointed, so a resumed run sees the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import multiprocessing as mp
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from contrastkit.data.batching import SeededBatches
from contrastkit.data.image.loader import Augment, augment_view, augmentation_generator
from contrastkit.data.text.augment import TextAugmentation
from contrastkit.errors import UserError, check_choice

Tokenize = Callable[[Sequence[str]], dict[str, Tensor]]
BATCH_SAMPLERS: tuple[str, ...] = ("random", "no_duplicates")


def no_duplicate_batches(order: Sequence[int], texts: Callable[[int], Iterable[str]], size: int) -> list[list[int]]:
    """Full batches of ``size`` rows, taken greedily in ``order``, in which no text occurs twice
    (across all columns: a repeated text would be a false in-batch negative — the idea of
    sentence-transformers' NoDuplicatesBatchSampler). Each batch starts from the earliest rows not
    yet used, so a row skipped for a clash joins one of the next batches; rows left when no full
    batch can be made without a duplicate are dropped for this epoch. ``texts(row)``: the row's
    texts."""
    remaining = dict.fromkeys(order)  # ordered set: rows not used yet
    keys = {row: set(texts(row)) for row in remaining}
    batches: list[list[int]] = []
    while len(remaining) >= size:
        batch: list[int] = []
        seen: set[str] = set()
        for row in remaining:
            if seen.isdisjoint(keys[row]):
                batch.append(row)
                seen |= keys[row]
                if len(batch) == size:
                    break
        if len(batch) < size:
            break
        for row in batch:
            del remaining[row]
        batches.append(batch)
    return batches


def _check_batch(batch_size: int, n: int, what: str) -> None:
    if batch_size < 1 or n // batch_size == 0:
        raise UserError(
            f"train.batch_size {batch_size} is larger than the data set ({n} {what}); "
            f"use a batch size <= {n}"
        )


class _SeededLoader(SeededBatches):
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

    def full_permutation(self, epoch: int) -> Tensor:
        """The epoch's permutation of all n rows (the same on every rank)."""
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))

    def permutation(self, epoch: int) -> Tensor:
        """This rank's slice of the epoch's permutation (the same permutation on every rank)."""
        per_rank = self.n // self.world_size
        return self.full_permutation(epoch)[self.rank * per_rank : (self.rank + 1) * per_rank]

    def _index_batches(self, epoch: int, start: int) -> Iterator[tuple[Tensor, list[int]]]:
        """(indices (B,), the same as a list) of the epoch's batches from batch `start` on."""
        perm = self.permutation(epoch)
        for b in range(start, len(self)):
            idx = perm[b * self.batch_size : (b + 1) * self.batch_size]
            yield idx, idx.tolist()

    def _rng(self) -> np.random.Generator:
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        return np.random.default_rng(seed)



class _ListColumns:
    """Aligned in-memory text columns with the ``take(rows)`` of :class:`LazyText`."""

    def __init__(self, columns: Sequence[Sequence[str]]) -> None:
        self.columns = [list(c) for c in columns]
        self.n_columns = len(self.columns)

    def __len__(self) -> int:
        return len(self.columns[0])

    def take(self, rows: Sequence[int]) -> list[list[str]]:
        return [[col[i] for i in rows] for col in self.columns]


class _ViewBatches(torch.utils.data.Dataset[list[dict[str, Tensor]]]):
    """One batch's tokenised views from (rows, augmentation seed): run in the loader's process
    or in DataLoader worker processes, with the same result."""

    def __init__(self, source: Any, tokenize: Tokenize, views: int, augmentation: TextAugmentation | None) -> None:
        self.source = source
        self.tokenize = tokenize
        self.views = views
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: tuple[list[int], int | None]) -> list[dict[str, Tensor]]:
        rows, seed = item
        columns = self.source.take(rows)
        aug = self.augmentation
        if len(columns) == 1:
            if aug is None or seed is None:
                return [self.tokenize(columns[0])] * self.views
            rng = np.random.default_rng(seed)
            return [self.tokenize(aug(columns[0], rng)) for _ in range(self.views)]
        rng = np.random.default_rng(seed if seed is not None else 0)
        return [self.tokenize(aug(texts, rng) if aug is not None else texts) for texts in columns]


class TextViewLoader(_SeededLoader):
    """Yields ``{"views": [ids (B, L)], "masks": [mask (B, L)], "index": (B,)}``.

    ``columns``: one list of texts (unsupervised: ``views`` copies of each sentence, each passed
    through ``augmentation`` if given, else identical so that dropout alone makes them differ)
    or 2–3 aligned lists (anchor, positive[, hard negative]: one view each); or a
    :class:`~contrastkit.data.text.lazy.LazyText` read from its file row by row.

    ``workers`` > 0 reads and tokenises batches in that many DataLoader worker processes; the
    batches (and the checkpointed generator) are the same as with ``workers=0``.

    ``scores`` (one number per row): batches carry them as ``"scores"`` (B,) float32 (scored
    pairs). ``batch_sampler="no_duplicates"`` (in-memory columns): batches hold no text twice
    (:func:`no_duplicate_batches` over the epoch's permutation, on the global batch under
    torch.distributed, each process taking its slice); an epoch may then hold fewer than
    ``len()`` batches. Both samplers are functions of (seed, epoch), so a resumed run sees the
    same batches.
    """

    def __init__(
        self,
        columns: Any,
        tokenize: Tokenize,
        *,
        batch_size: int,
        views: int = 2,
        augmentation: TextAugmentation | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
        scores: Sequence[float] | None = None,
        batch_sampler: str = "random",
    ) -> None:
        check_choice("text.batch_sampler", batch_sampler, BATCH_SAMPLERS)
        if hasattr(columns, "take"):
            source = columns
        else:
            if not columns or any(len(c) != len(columns[0]) for c in columns):
                raise UserError(f"text columns must be non-empty and aligned; got lengths {[len(c) for c in columns]}")
            source = _ListColumns(columns)
        super().__init__(len(source), batch_size, seed, rank, world_size, "texts")
        self.source = source
        self.tokenize = tokenize
        self.views = views if source.n_columns == 1 else source.n_columns
        self.augmentation = augmentation
        self.device = torch.device(device)
        self.workers = workers
        self.dataset = _ViewBatches(source, tokenize, self.views, augmentation)
        self.scores = None if scores is None else torch.as_tensor(list(scores), dtype=torch.float32)
        if self.scores is not None and self.scores.shape != (len(source),):
            raise UserError(f"scores must hold one number per row ({len(source)}); got {tuple(self.scores.shape)}")
        self.batch_sampler = batch_sampler
        if batch_sampler == "no_duplicates" and not isinstance(source, _ListColumns):
            raise UserError("text.batch_sampler no_duplicates needs the texts in memory; set text.lazy=false")

    def _index_batches(self, epoch: int, start: int) -> Iterator[tuple[Tensor, list[int]]]:
        if self.batch_sampler == "random":
            yield from super()._index_batches(epoch, start)
            return
        order = self.full_permutation(epoch).tolist()
        columns = cast(_ListColumns, self.source).columns
        size = self.batch_size
        batches = no_duplicate_batches(order, lambda row: (col[row] for col in columns), size * self.world_size)
        for rows in batches[start:]:
            mine = rows[self.rank * size : (self.rank + 1) * size]
            yield torch.tensor(mine, dtype=torch.long), mine

    def _seed(self, generator: torch.Generator) -> int:
        return int(torch.randint(0, 2**62, (1,), generator=generator))

    def batches(self, epoch: int, start: int = 0) -> Iterator[dict[str, Any]]:
        use_rng = self.augmentation is not None
        if self.workers == 0:
            for idx, rows in self._index_batches(epoch, start):
                seed = self._seed(self.generator) if use_rng else None
                yield self._to_device(idx, self.dataset[(rows, seed)])
            return
        # seeds are drawn ahead from a copy of the generator; the generator itself advances as
        # each batch is handed out, so its checkpointed state matches the batches consumed
        shadow = torch.Generator()
        shadow.set_state(self.generator.get_state())
        index = list(self._index_batches(epoch, start))
        items = [(rows, self._seed(shadow) if use_rng else None) for _, rows in index]
        methods = mp.get_all_start_methods()
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=None, sampler=items, num_workers=self.workers,
            multiprocessing_context="fork" if "fork" in methods else None,
        )
        for (idx, _), encs in zip(index, loader, strict=True):
            if use_rng:
                self._seed(self.generator)
            yield self._to_device(idx, encs)

    def _to_device(self, idx: Tensor, encs: list[dict[str, Tensor]]) -> dict[str, Any]:
        ids = [enc["input_ids"].to(self.device) for enc in encs]
        masks = [enc["attention_mask"].to(self.device) for enc in encs]
        batch: dict[str, Any] = {"views": ids, "masks": masks, "index": idx.to(self.device)}
        if self.scores is not None:
            batch["scores"] = self.scores[idx].to(self.device)
        return batch


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
