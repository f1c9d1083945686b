"""Reading an image store: one split as a read-only memory map (see contrastkit.data.image.store).

The manifest is checked against the files first (contrastkit.data.image.storefmt); the images
are then mapped, not read, and registered with contrastkit.data.image.mapped so that passes over
them give their pages back and training reads its rows with ``pread``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from contrastkit.data.image import mapped
from contrastkit.data.image.imageset import ImageDataset
from contrastkit.data.image.storefmt import images_file, labels_file, read_manifest
from contrastkit.errors import UserError


def open_store(store: str | Path | None, split: str = "train", image_size: int | None = None) -> ImageDataset:
    """One split of a store as an ImageDataset backed by a read-only memory map (no copy)."""
    if not store:
        raise UserError("data set 'store' needs data.root: a folder written by `contrastkit prepare`")
    root = Path(store).expanduser()
    manifest = read_manifest(root)
    splits = manifest["splits"]
    if split not in splits:
        raise UserError(f"store {root} has no split {split!r} (it has: {', '.join(splits)})")
    c, s, n = int(manifest["channels"]), int(manifest["size"]), int(splits[split]["count"])
    if image_size is not None and image_size != s:
        raise UserError(
            f"store {root} holds {s}x{s} images but data.image_size is {image_size}; "
            f"leave data.image_size unset or prepare the store again with --size {image_size}"
        )
    if n == 0:
        raise UserError(f"store {root}: split {split!r} holds no images")
    array = np.memmap(root / images_file(split), np.uint8, "r", shape=(n, c, s, s))
    mapped.register(array)  # passes over the store give their pages back (see mapped.py)
    with warnings.catch_warnings():  # read-only on purpose: nothing writes to the images
        warnings.simplefilter("ignore", UserWarning)
        images = torch.from_numpy(array)
    labels = np.load(root / labels_file(split))
    classes = list(manifest["classes"])
    labelled = bool(classes) and labels.shape == (n,) and bool((labels >= 0).all())
    data = ImageDataset(
        images, torch.from_numpy(labels) if labelled else None, classes if labelled else [], "store", mapped=True
    )
    rec = splits[split]
    if isinstance(rec.get("mean"), list) and isinstance(rec.get("std"), list) and len(rec["mean"]) == c == len(rec["std"]):
        data.set_stats(rec["mean"], rec["std"])  # computed when the store was prepared
    return data
