"""Streaming image folders (``data.name: folder`` with ``data.stream: true``): no decoding up front.

:func:`open_folder_stream` lists the folder exactly as ``data.name: folder`` does (class
subfolders give labels, ``training/`` ``test/`` … split subfolders are honoured) and keeps only the
file list and the labels. Corrupt files are skipped *at listing time* by a header check (PIL
opens the header without decoding the pixels); a file whose header is fine but whose pixels do
not decode stops training with a one-line error naming the file. The channels (RGB when any
header says colour) come from the same header pass.

Batches are decoded by :class:`StreamViewLoader` in ``torch.utils.data.DataLoader`` worker
processes (``data.workers``; 0 decodes in the training process): each worker gets a whole
batch's index list, decodes, resizes and centre-crops every file exactly as the in-memory folder
path does and returns one uint8 (B, C, S, S) tensor; the batched augmentation then runs on the
device as for in-memory data. The index lists come from the same seeded per-epoch permutation
and per-rank sharding as :class:`InMemoryViewLoader`, so the batch for (seed, epoch, step) is the
same with any number of workers and the same as the in-memory folder's, and a resumed run
continues with exactly the remaining batches.

Normalisation statistics are computed from a seeded sample of ``STATS_SAMPLE`` (1,000) files
(all of them in a smaller folder, which then gives exactly the in-memory statistics).

``data.gpu_decode: true`` (CUDA only) reads the files' bytes in the workers and decodes JPEGs on
the GPU with ``torchvision.io.decode_jpeg(device="cuda")``; nvJPEG's pixels may differ slightly
from the CPU decoder's, and files other than JPEG are refused with their name. Untested here
(no GPU in the test environment).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from contrastkit.data.image.augment import BatchAugmentation
from contrastkit.data.image.decode import (
    decode_file,
    header_colour,
    resize_center_crop,
    to_channels,
)
from contrastkit.data.image.folders import folder_files
from contrastkit.data.image.imageset import ImageDataset
from contrastkit.data.image.loader import ViewLoaderBase
from contrastkit.errors import UserError

STATS_SAMPLE = 1000
_STATS_SEED = 2718


@dataclass
class FolderStream:
    """An image folder as a file list and labels; images are decoded only when read."""

    files: list[Path]
    labels: Tensor | None
    classes: list[str]
    channels: int
    image_size: int
    name: str = "folder"
    _stats: tuple[tuple[float, ...], tuple[float, ...]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def read(self, idx: Sequence[int]) -> Tensor:
        """The images at `idx` as one uint8 (len(idx), C, S, S) tensor, in that order."""
        images, bad = decode_files([self.files[i] for i in idx], self.image_size, self.channels == 3)
        if bad:
            raise UserError(f"image file {bad} cannot be decoded (its header looked fine); remove or replace it")
        return images

    def _compute_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self._stats is None:
            n = len(self)
            gen = torch.Generator().manual_seed(_STATS_SEED)
            pick = torch.randperm(n, generator=gen)[:STATS_SAMPLE].sort().values if n > STATS_SAMPLE else torch.arange(n)
            sample = ImageDataset(self.read(pick.tolist()), None, [], self.name)
            self._stats = (sample.mean(), sample.std())
        return self._stats

    def mean(self) -> tuple[float, ...]:
        """Per-channel pixel mean of a seeded sample of STATS_SAMPLE files (all when fewer)."""
        return self._compute_stats()[0]

    def std(self) -> tuple[float, ...]:
        """Per-channel pixel standard deviation of the same sample."""
        return self._compute_stats()[1]


def open_folder_stream(split: str, root: str | None, size: int | None) -> FolderStream:
    """List an image folder (as ``data.name: folder`` reads it) without decoding its images."""
    folder, files, targets, classes = folder_files(split, root)
    ok: list[Path] = []
    labels: list[int] = []
    colour = False
    for path, label in zip(files, targets or [0] * len(files), strict=True):
        header = header_colour(path)
        if header is None:
            continue
        colour = colour or header
        ok.append(path)
        labels.append(label)
    if len(ok) < len(files):
        warnings.warn(
            f"skipped {len(files) - len(ok)} image file(s) of {len(files)} in {folder} with an unreadable header",
            stacklevel=2,
        )
    if not ok:
        raise UserError(f"image folder {folder}: none of its {len(files)} image files could be read")
    return FolderStream(
        ok,
        torch.tensor(labels, dtype=torch.int64) if classes else None,
        classes,
        3 if colour else 1,
        size if size is not None else 64,
    )


def decode_files(paths: Sequence[Path], size: int, rgb: bool) -> tuple[Tensor, str | None]:
    """Decode, resize and centre-crop files (as the in-memory folder does) into (k, C, S, S) uint8;
    the name of the first file that cannot be decoded, or None."""
    out: list[Tensor] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for p in paths:
            img = decode_file(p)
            if img is None:
                return torch.empty(0, dtype=torch.uint8), str(p)
            out.append(to_channels(resize_center_crop(img, size), rgb))
    return torch.stack(out), None


class _BatchFiles(torch.utils.data.Dataset[tuple[Tensor, Any]]):
    """Item b: batch b decoded (or its files' raw bytes for GPU decoding) and a bad file name."""

    def __init__(self, stream: FolderStream, batches: list[list[int]], raw: bool) -> None:
        self.files = stream.files
        self.size, self.rgb, self.raw = stream.image_size, stream.channels == 3, raw
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> tuple[Any, str | None]:
        paths = [self.files[i] for i in self.batches[b]]
        if self.raw:
            from torchvision.io import read_file

            return [read_file(str(p)) for p in paths], None
        return decode_files(paths, self.size, self.rgb)


def _init_worker(_: int) -> None:
    torch.set_num_threads(1)


class StreamViewLoader(ViewLoaderBase):
    """Batches of augmented views of a :class:`FolderStream`, decoded in DataLoader workers
    (``kwargs``: those of :class:`ViewLoaderBase`: ``views``, or the multi-crop ``crops``, ...)."""

    def __init__(
        self,
        stream: FolderStream,
        *,
        batch_size: int,
        augmentation: BatchAugmentation | None = None,
        workers: int = 2,
        gpu_decode: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(len(stream), batch_size=batch_size, augmentation=augmentation, **kwargs)
        if gpu_decode and self.device.type != "cuda":
            raise UserError("data.gpu_decode needs a CUDA device (train.device cuda); this run has none")
        self.stream = stream
        self.workers = workers
        self.gpu_decode = gpu_decode

    def batches(self, epoch: int, start: int = 0) -> Iterator[dict[str, Any]]:
        perm = self.permutation(epoch)
        lists = [perm[b * self.batch_size : (b + 1) * self.batch_size].tolist() for b in range(start, len(self))]
        loader = torch.utils.data.DataLoader(
            _BatchFiles(self.stream, lists, self.gpu_decode),
            batch_size=None,
            num_workers=self.workers,
            worker_init_fn=_init_worker if self.workers else None,
            pin_memory=self.device.type == "cuda",
        )
        for idx_list, (x, bad) in zip(lists, loader, strict=True):
            if bad is not None:
                raise UserError(f"image file {bad} cannot be decoded (its header looked fine); remove or replace it")
            x = self._decode_gpu(x, idx_list) if self.gpu_decode else x.to(self.device, non_blocking=True)
            yield self.make_batch(x, torch.tensor(idx_list, dtype=torch.int64, device=self.device))

    def _decode_gpu(self, raw: list[Tensor], idx: list[int]) -> Tensor:
        from torchvision.io import decode_jpeg

        try:
            images = decode_jpeg(raw, device=self.device)
        except RuntimeError as exc:
            names = ", ".join(str(self.stream.files[i]) for i in idx[:3])
            raise UserError(f"data.gpu_decode reads JPEG files only; a file of this batch is not one ({names}, ...)") from exc
        rgb, size = self.stream.channels == 3, self.stream.image_size
        return torch.stack([to_channels(resize_center_crop(img, size), rgb) for img in images])
