"""The image task's validation split: a labelled slice held out of the training split.

``eval.val_size`` images of the training split (all classes), drawn with ``eval.val_seed``
before training, are never trained on and never in the probes' labelled bank; the monitor
(``eval.monitor_every``) and hyper-parameter searches measure on them, so that the test split
is only ever used for the final figures. The draw depends on the split's size, ``val_size`` and
``val_seed`` only (not on ``train.seed``): runs that differ in their seed share one slice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from contrastkit.data.image.datasets import ImageDataset
from contrastkit.data.image.spec import DataConfig, fit_data, load_split
from contrastkit.data.image.stream import FolderStream
from contrastkit.errors import UserError


def validation_rows(n: int, size: int, seed: int) -> Tensor:
    """``size`` distinct rows of ``0 .. n-1`` drawn with ``seed``, sorted."""
    gen = torch.Generator().manual_seed(seed * 1_000_033 + 7)
    return torch.randperm(n, generator=gen)[:size].sort().values


@dataclass
class ValidationSplit:
    """The whole training split (all classes) and the rows of it held out for validation."""

    full: ImageDataset
    rows: Tensor  # sorted rows of ``full``
    seed: int

    def mask(self) -> Tensor:
        """True at the held-out rows of ``full``."""
        held = torch.zeros(len(self.full), dtype=torch.bool)
        held[self.rows] = True
        return held

    def validation(self) -> ImageDataset:
        """The held-out images and their labels (a copy: the slice is small)."""
        return self.full.subset(self.rows)

    def rest(self) -> ImageDataset:
        """The training split less the slice, all classes (the probes' and the monitor's bank). A
        store keeps the statistics it was prepared with (no pass over its files)."""
        rest = self.full.select(~self.mask())
        if self.full.mapped:
            rest.set_stats(self.full.mean(), self.full.std())
        return rest

    def record(self) -> dict[str, Any]:
        """What results.json says of the split: where it comes from, its size, seed and rows' hash."""
        digest = hashlib.sha1(self.rows.numpy().astype("<i8").tobytes()).hexdigest()
        return {"from": "train", "size": int(self.rows.numel()), "of": len(self.full), "seed": self.seed,
                "rows_sha1": digest}


def validation_split(d: DataConfig, size: int, seed: int) -> ValidationSplit | None:
    """The validation slice of the configured training split (None when ``size`` is 0); one-line
    errors for a streamed folder, unlabelled data, or a slice that leaves nothing to train on."""
    if not size:
        return None
    if d.stream:
        raise UserError("eval.val_size does not work with data.stream yet; prepare a store (contrastkit prepare) "
                        "or set eval.val_size=0")
    full = load_split(d, "train", all_classes=True)
    if full.labels is None:
        raise UserError(f"eval.val_size needs labels, and data set {full.name!r} has none")
    if size >= len(full):
        raise UserError(f"eval.val_size {size} leaves no training image: the training split has {len(full)}; "
                        f"use at most {len(full) - 1}")
    return ValidationSplit(full, validation_rows(len(full), size, seed), seed)


def default_val_size(d: DataConfig) -> int:
    """The validation slice a search holds out where a config holds none: a tenth of the
    training split, at most 5,000 images (reads the split's size)."""
    return max(1, min(5000, len(load_split(d, "train", all_classes=True)) // 10))


def pretraining_data(d: DataConfig, split: ValidationSplit | None) -> ImageDataset | FolderStream:
    """What pre-training reads: the training split (restricted to ``data.train_classes``) less the
    validation slice."""
    if split is None:
        return fit_data(d)
    if d.train_classes is None:
        return split.rest()
    fit = fit_data(d)  # checks the classes; its rows are those of the full split in these classes, in order
    assert split.full.labels is not None and isinstance(fit, ImageDataset)
    in_fit = torch.isin(split.full.labels, torch.tensor(d.train_classes))
    return fit.select(~split.mask()[in_fit])
