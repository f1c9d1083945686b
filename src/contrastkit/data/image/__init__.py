"""Image data: in-memory uint8 data sets and batched on-device augmentations."""

from __future__ import annotations

from contrastkit.data.image.augment import (
    AUGMENTATIONS,
    BatchAugmentation,
    EvalTransform,
    build_augmentation,
    default_augmentation,
    eval_transform,
)
from contrastkit.data.image.datasets import (
    DATASETS,
    SPLITS,
    ImageDataset,
    load_image_dataset,
    read_idx,
)

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "SPLITS",
    "BatchAugmentation",
    "EvalTransform",
    "ImageDataset",
    "build_augmentation",
    "default_augmentation",
    "eval_transform",
    "load_image_dataset",
    "read_idx",
]
