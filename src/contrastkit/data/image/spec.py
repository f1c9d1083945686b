"""The ``data:`` section of the image tasks (image, image_text, gan) and the images it names:
splits (restricted to ``data.train_classes``), streamed folders, data specs such as
``fashion-mnist:test`` or a folder, and the augmentation of a recipe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contrastkit.data.image.augment import (
    BatchAugmentation,
    build_augmentation,
    default_augmentation,
)
from contrastkit.data.image.datasets import DATASETS, ImageDataset, load_image_dataset
from contrastkit.data.image.stream import FolderStream, open_folder_stream
from contrastkit.errors import UserError
from contrastkit.options import option


@dataclass
class DataConfig:
    """Which images to learn from and how to augment them (tasks image, image_text and gan)."""

    name: str = option("digits", "data set", choices=DATASETS)
    root: str | None = option(None, "folder of the data set's files (default: found or downloaded)")
    download: bool = option(False, "download the data set where a network exists")
    image_size: int | None = option(None, "resize images to this side (default: the data's)", ge=1)
    augment: list[dict[str, Any]] | None = option(None, "augmentation ops (default: per data set)")
    views: int = option(2, "augmented views of each image per step", ge=2)
    label_fraction: float = option(
        1.0, "SupCon / semi-supervised: share of training labels used (per class, seeded)", gt=0, le=1
    )
    train_classes: list[int] | None = option(
        None, "pre-train on the images of these classes only (novel-class few-shot: eval.episode_classes=novel)", ge=0
    )
    stream: bool = option(
        False, "folder data: decode batches from the files while training instead of loading all first"
    )
    workers: int = option(2, "data.stream: DataLoader worker processes decoding batches (0: in the training process)", ge=0)
    gpu_decode: bool = option(False, "data.stream on CUDA: decode JPEG files on the GPU (nvJPEG)")

    def check_values(self, prefix: str) -> None:
        if self.stream and self.name != "folder":
            raise UserError(f"{prefix}.stream reads image folders only ({prefix}.name=folder), not {self.name!r}")
        if self.gpu_decode and not self.stream:
            raise UserError(f"{prefix}.gpu_decode needs {prefix}.stream=true")
        if self.gpu_decode and not torch.cuda.is_available():
            raise UserError(f"{prefix}.gpu_decode needs a CUDA GPU, and none is available")
        if self.train_classes is not None and not self.train_classes:
            raise UserError(f"{prefix}.train_classes is empty; give at least one class or leave it out")


def _check_classes(d: DataConfig, labels: torch.Tensor | None, num_classes: int, what: str) -> torch.Tensor:
    """A mask of the rows of ``data.train_classes``; one-line errors for unlabelled data or
    classes the data does not have."""
    assert d.train_classes is not None
    if labels is None:
        raise UserError(f"data.train_classes needs labels, and {what} has none")
    unknown = sorted(set(d.train_classes) - set(range(num_classes)))
    if unknown:
        raise UserError(f"data.train_classes {unknown} are not classes of {what} (0..{num_classes - 1})")
    return torch.isin(labels, torch.tensor(d.train_classes))


def needed_data(d: DataConfig) -> str:
    """What a recipe's ``data`` section needs, for ``contrastkit recipes``."""
    return f"{d.name} (data.root)" if d.name in ("folder", "store") else d.name


def load_split(d: DataConfig, split: str, *, all_classes: bool = False) -> ImageDataset:
    """The configured data set's train or test split; the train split restricted to
    ``data.train_classes`` where given (unless ``all_classes``)."""
    data = load_image_dataset(d.name, split=split, root=d.root, download=d.download, image_size=d.image_size)
    if split != "train" or all_classes or d.train_classes is None:
        return data
    # a store stays mapped: the chosen rows are read by index, not copied
    return data.select(_check_classes(d, data.labels, data.num_classes, f"data set {data.name!r}"))


def stream_split(d: DataConfig, split: str = "train") -> FolderStream:
    """The configured folder's split as a file list (``data.stream``), restricted to
    ``data.train_classes`` where given."""
    stream = open_folder_stream(split, d.root, d.image_size)
    if split != "train" or d.train_classes is None:
        return stream
    keep = _check_classes(d, stream.labels, stream.num_classes, "this folder")
    assert stream.labels is not None
    return FolderStream(
        [f for f, k in zip(stream.files, keep.tolist(), strict=True) if k],
        stream.labels[keep], stream.classes, stream.channels, stream.image_size,
    )


def fit_data(d: DataConfig) -> ImageDataset | FolderStream:
    """What training reads (its channels, size and normalisation): the train split, in memory or
    as a stream."""
    return stream_split(d) if d.stream else load_split(d, "train")


def input_size(d: DataConfig, data: ImageDataset | FolderStream) -> int:
    """The side of the images the encoder sees."""
    return int(d.image_size or data.image_size)


def augmentation_for(d: DataConfig, data: ImageDataset | FolderStream, *, default: list[dict[str, Any]] | None = None,
                     mean: list[float] | None = None, std: list[float] | None = None) -> BatchAugmentation:
    """The recipe's augmentation (``data.augment``; else ``default``, else the data's default)
    at the input size, normalised with the data's statistics (or ``mean`` / ``std``)."""
    size = input_size(d, data)
    spec = d.augment if d.augment is not None else default or default_augmentation(data.channels, size)
    return build_augmentation(spec, size=size, channels=data.channels, mean=mean or data.mean(), std=std or data.std())


def images_for_spec(d: DataConfig, spec: str, size: int | None) -> ImageDataset:
    """The images of a data spec ('name[:split]' or a folder) at ``size`` (None: as stored);
    the configured data set's own files (``data.root``) when the spec names it."""
    name, _, split = spec.partition(":")
    root = None
    if Path(spec).is_dir():
        name, split, root = "folder", "train", spec
    elif name == "folder":
        name, root, split = "folder", split, "train"
    elif name == d.name:
        root = d.root
    return load_image_dataset(name, split=split or "test", root=root, download=False, image_size=size)


def gallery_spec(d: DataConfig) -> str:
    """The images to browse in ``contrastkit serve``: the configured data set's test split (an
    image folder: its images)."""
    if d.name == "folder" and d.root:
        return d.root
    return f"{d.name}:test"


def image_items(spec: str, data: ImageDataset) -> list[dict[str, Any]]:
    """One description per image of a spec: its name (``spec#row``) and class name where known."""
    items: list[dict[str, Any]] = []
    for i in range(data.images.shape[0]):
        item: dict[str, Any] = {"image": f"{spec}#{i}"}
        if data.labels is not None and data.classes:
            label = int(data.labels[i])
            item["label"] = data.classes[label] if label < len(data.classes) else label
        items.append(item)
    return items


def visible_labels(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Labels with all but ``fraction`` of each class hidden (-1), chosen with ``seed``;
    every class keeps at least one label."""
    if fraction >= 1.0:
        return labels.clone()
    gen = torch.Generator().manual_seed(seed * 104729 + 11)
    out = torch.full_like(labels, -1)
    for c in labels.unique():
        idx = torch.nonzero(labels == c).flatten()
        keep = max(1, round(fraction * idx.numel()))
        out[idx[torch.randperm(idx.numel(), generator=gen)[:keep]]] = c
    return out


def seeded_subset(data: ImageDataset, limit: int | None, seed: int) -> ImageDataset:
    """A seeded random subset of at most ``limit`` images, in data order (all without a limit)."""
    n = len(data)
    if limit is None or limit >= n:
        return data
    return data.subset(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values)
