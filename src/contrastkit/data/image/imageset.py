"""An image data set as one uint8 (N, C, H, W) tensor, in memory or memory-mapped from a store.

:class:`ImageDataset` holds the images, the labels and the class names, and computes the
per-channel normalisation statistics in one exact pass (a value histogram per channel, no float
copy of the pixels). A mapped data set (``open_store``) is read in blocks or by row, never copied
whole; its blocks' pages are given back as the pass goes (see contrastkit.data.image.mapped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from contrastkit.data.image.mapped import release, take

_CHUNK = 4096
_STATS_BYTES = 32 << 20  # uint8 bytes per block of the statistics pass


def channel_histogram(block: Tensor) -> Tensor:
    """(C, 256) int64: how often each uint8 value occurs per channel in `block` (N, C, H, W)."""
    return torch.stack([torch.bincount(block[:, c].reshape(-1), minlength=256) for c in range(block.shape[1])])


def stats_from_histogram(hist: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation in [0, 1] of the pixels counted in `hist` (C, 256):
    exact sums over the counts (no float pass over the pixels), std at least 1e-6."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    counts = hist.to(torch.float64)
    total = counts.sum(dim=1).clamp_min(1.0)
    mean = (counts * values).sum(dim=1) / total
    var = ((counts * values.square()).sum(dim=1) / total - mean.square()).clamp_min(0.0)
    return tuple(mean.tolist()), tuple(var.sqrt().clamp_min(1e-6).tolist())


@dataclass
class ImageDataset:
    """An image data set: uint8 images (N, C, H, W) and optional int64 labels (N,).

    ``mapped``: the images are a read-only memory map of a store (not resident): read them in
    blocks or by index, never copy or move the whole tensor. ``rows`` (mapped only, from
    :meth:`select`): the data set is these rows of the map (labels already selected), no copy.
    """

    images: Tensor
    labels: Tensor | None
    classes: list[str]
    name: str
    mapped: bool = field(default=False, compare=False)
    rows: Tensor | None = field(default=None, compare=False)
    _stats: tuple[tuple[float, ...], tuple[float, ...]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be a uint8 (N, C, H, W) tensor, got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if not self.mapped:
            self.images = self.images.contiguous()
        if self.rows is not None:
            if not self.mapped:
                raise ValueError("rows select rows of a memory-mapped store only")
            self.rows = self.rows.to(torch.int64).contiguous()
        if self.labels is not None:
            self.labels = self.labels.to(torch.int64).contiguous()
            if self.labels.shape != (len(self),):
                raise ValueError(f"labels must have shape ({len(self)},), got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.rows.numel()) if self.rows is not None else int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of class names (0 when unlabeled)."""
        return len(self.classes)

    @property
    def channels(self) -> int:
        """Channels per image (1 grayscale, 3 RGB)."""
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        """Image height in pixels."""
        return int(self.images.shape[2])

    def _compute_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self._stats is None:
            hist = torch.zeros(self.channels, 256, dtype=torch.int64)
            rows = max(1, min(_CHUNK, _STATS_BYTES // max(1, self.images[0].numel())))
            for start in range(0, len(self), rows):
                if self.rows is not None:  # selected rows of a map: read, not mapped
                    hist += channel_histogram(take(self.images, self.rows[start : start + rows]))
                    continue
                block = self.images[start : start + rows]
                hist += channel_histogram(block)
                release(block)
            self._stats = stats_from_histogram(hist)
        return self._stats

    def set_stats(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Use these per-channel statistics (e.g. a store's, computed when it was prepared)."""
        if len(mean) != self.channels or len(std) != self.channels:
            raise ValueError(f"{self.channels} channels, got mean {list(mean)} and std {list(std)}")
        self._stats = (tuple(float(v) for v in mean), tuple(float(v) for v in std))

    def mean(self) -> tuple[float, ...]:
        """Per-channel pixel mean in [0, 1] (computed once, then cached)."""
        return self._compute_stats()[0]

    def std(self) -> tuple[float, ...]:
        """Per-channel pixel standard deviation in [0, 1] (computed once, then cached)."""
        return self._compute_stats()[1]

    def _pick(self, idx: Tensor) -> tuple[Tensor | None, Tensor]:
        """The labels at `idx` (int indices or a boolean mask) and the rows of the images they are."""
        idx = torch.as_tensor(idx)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        idx = idx.to(torch.int64)
        labels = self.labels.index_select(0, idx) if self.labels is not None else None
        return labels, self.rows.index_select(0, idx) if self.rows is not None else idx

    def subset(self, idx: Tensor) -> ImageDataset:
        """The images (and labels) at `idx` (int indices or a boolean mask) as a new data set."""
        labels, rows = self._pick(idx)
        return ImageDataset(take(self.images, rows), labels, list(self.classes), self.name)

    def select(self, idx: Tensor) -> ImageDataset:
        """Like :meth:`subset`, but a memory-mapped data set stays mapped: the result holds the
        row numbers, not a copy of the images (training and statistics read them by index)."""
        if not self.mapped:
            return self.subset(idx)
        labels, rows = self._pick(idx)
        return ImageDataset(self.images, labels, list(self.classes), self.name, mapped=True, rows=rows)
