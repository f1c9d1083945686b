"""The ``data:`` section of the image tasks (image, image_text, gan) and the images it names:
splits (restricted to ``data.train_classes``), streamed folders, data specs such as
``fashion-mnist:test`` or a folder, and the augmentation of a recipe: ``data.views`` views of
one size, or the multi-crop groups of ``data.crops`` (views of several sizes)."""

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
from contrastkit.data.image.loader import ViewGroup
from contrastkit.data.image.stream import FolderStream, open_folder_stream
from contrastkit.errors import UserError, closest
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
    crops: list[dict[str, Any]] | None = option(
        None, "multi-crop instead of data.views: groups {count, size, scale: [low, high], augment: [ops]}, "
        "the first the global views at the training size, then smaller local ones",
    )
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
        if self.crops is not None:
            groups = crop_groups(self.crops, f"{prefix}.crops")
            if self.views != 2:
                raise UserError(
                    f"{prefix}.views {self.views} and {prefix}.crops both give the views of a step; "
                    f"give one ({prefix}.crops: the count of each group)"
                )
            if self.image_size is not None and groups[0].size != self.image_size:
                raise UserError(
                    f"{prefix}.crops[0].size {groups[0].size} must equal {prefix}.image_size {self.image_size} "
                    "(the training size): the first group holds the global views"
                )


CROP_KEYS: tuple[str, ...] = ("count", "size", "scale", "augment")


@dataclass(frozen=True)
class CropGroup:
    """One group of ``data.crops``: ``count`` views cropped at ``scale`` (a share of the image's
    area) and resized to ``size``, with the group's own ``augment`` ops (None: the data's)."""

    count: int
    size: int
    scale: tuple[float, float]
    augment: list[Any] | None = None


def _positive_int(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where} must be a positive integer, got {value!r}")
    return value


def _crop_group(item: Any, where: str) -> CropGroup:
    if not isinstance(item, dict):
        raise UserError(f"{where} must be a mapping {{count, size, scale[, augment]}}, got {item!r}")
    for key in item:
        if key not in CROP_KEYS:
            raise UserError(f"{where}: unknown key {key!r}{closest(str(key), CROP_KEYS)}; allowed: {', '.join(CROP_KEYS)}")
    missing = [k for k in CROP_KEYS[:3] if k not in item]
    if missing:
        raise UserError(f"{where} needs {', '.join(missing)} (a group is {{count, size, scale: [low, high][, augment]}})")
    scale = item["scale"]
    if (not isinstance(scale, list | tuple) or len(scale) != 2
            or any(isinstance(v, bool) or not isinstance(v, int | float) for v in scale)
            or not 0 < scale[0] <= scale[1] <= 1):
        raise UserError(f"{where}.scale must be [low, high] with 0 < low <= high <= 1 (shares of the image area), got {scale!r}")
    augment = item.get("augment")
    if augment is not None:
        if not isinstance(augment, list):
            raise UserError(f"{where}.augment must be a list of augmentation ops, got {augment!r}")
        for op in augment:
            if isinstance(op, dict) and op.get("op") == "random_resized_crop" and "scale" in op:
                raise UserError(f"{where}.augment: give the crop's scale as {where}.scale, not in its random_resized_crop")
    return CropGroup(_positive_int(f"{where}.count", item["count"]), _positive_int(f"{where}.size", item["size"]),
                     (float(scale[0]), float(scale[1])), augment)


def crop_groups(crops: list[Any], where: str = "data.crops") -> list[CropGroup]:
    """The groups of ``data.crops``, each checked (one-line errors naming the bad value): the
    first the global views, the others smaller, at least two views in all."""
    if not crops:
        raise UserError(f"{where} is empty; give the global group first, e.g. [{{count: 2, size: 32, scale: [0.4, 1.0]}}]")
    groups = [_crop_group(item, f"{where}[{i}]") for i, item in enumerate(crops)]
    for i, g in enumerate(groups[1:], start=1):
        if g.size >= groups[0].size:
            raise UserError(
                f"{where}[{i}].size {g.size} must be smaller than the global size {groups[0].size} of {where}[0] "
                "(the first group holds the global views, the later ones the smaller local views)"
            )
    total = sum(g.count for g in groups)
    if total < 2:
        raise UserError(f"{where} gives {total} view per image; a step needs at least 2")
    return groups


def view_count(d: DataConfig) -> tuple[int, int]:
    """The views of each image per step and how many sizes they come in (``data.views`` or ``data.crops``)."""
    if d.crops is None:
        return d.views, 1
    groups = crop_groups(d.crops)
    return sum(g.count for g in groups), len({g.size for g in groups})


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


def _with_crop(ops: list[Any], scale: tuple[float, float]) -> list[Any]:
    """``ops`` with their random_resized_crop at ``scale`` (always applied; its ratio kept), one
    added in front where they have none."""
    out: list[Any] = []
    crop: dict[str, Any] = {"op": "random_resized_crop"}
    for entry in ops:
        item = {"op": entry} if isinstance(entry, str) else entry
        if isinstance(item, dict) and item.get("op") == "random_resized_crop":
            crop = dict(item)
            continue
        out.append(entry)
    crop.update(scale=list(scale), p=1.0)
    return [crop, *out]


def view_options(d: DataConfig, data: ImageDataset | FolderStream, device: torch.device | str) -> dict[str, Any]:
    """The view loader's views (contrastkit.data.image.loader): ``augmentation`` and ``views``,
    or with ``data.crops`` its groups (``crops``), each with its crop size and scale and the
    data's other ops (or the group's own), on ``device``."""
    if d.crops is None:
        return {"augmentation": augmentation_for(d, data).to(device), "views": d.views}
    size = input_size(d, data)
    groups = crop_groups(d.crops)
    if groups[0].size != size:
        raise UserError(
            f"data.crops[0].size {groups[0].size} must be the training size {size} (data.image_size, else the "
            "data's own size): the first group holds the global views"
        )
    ops = d.augment if d.augment is not None else default_augmentation(data.channels, size)
    crops: list[ViewGroup] = []
    for i, g in enumerate(groups):
        try:
            aug = build_augmentation(_with_crop(g.augment if g.augment is not None else ops, g.scale), size=g.size,
                                     channels=data.channels, mean=data.mean(), std=data.std())
        except UserError as exc:
            raise UserError(f"data.crops[{i}] (size {g.size}): {exc}") from None
        crops.append(ViewGroup(g.count, aug.to(device)))
    return {"crops": crops}


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
