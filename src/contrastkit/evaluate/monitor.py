"""Accuracy while training: kNN of the current encoder on the validation split (``eval.monitor_every``).

:class:`KnnAccuracy` is the evaluation: the encoder, in eval mode and without gradients, encodes
a labelled bank (a seeded sample of ``eval.monitor_bank`` training images outside the validation
split) and ``eval.monitor_val`` validation images; the weighted kNN classifier
(:func:`contrastkit.evaluate.knn.knn_predict`, the evaluation's own) labels the validation images
from the bank. :func:`knn_monitor` runs it every N steps (on the multiples of N and at the last
step) through the one validation callback, :class:`contrastkit.training.callbacks.Validation`:
``val_knn_acc`` in train_log.csv (a row of its own) and TensorBoard (``train/val_knn_acc``), the
curve in results.json's ``monitor``. The encoder is back in train mode afterwards and the random
state is left as it was, so training runs exactly as without the monitor. Its time counts towards
the run's elapsed time (a ``train.time_budget_minutes`` includes it) and is recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from contrastkit.data.image.validation import ValidationSplit
from contrastkit.evaluate.features import extract_features
from contrastkit.evaluate.knn import knn_predict
from contrastkit.training.callbacks import Validation

METRIC = "val_knn_acc"


def seeded_rows(n: int, limit: int, seed: int) -> Tensor:
    """At most ``limit`` of ``0 .. n-1`` drawn with ``seed``, sorted (all when ``limit >= n``)."""
    if limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


class KnnAccuracy:
    """Called: the kNN accuracy of ``encoder`` on ``val`` images against a labelled ``bank`` (see the module)."""

    def __init__(
        self,
        encoder: nn.Module,
        bank: tuple[Tensor, Tensor],
        val: tuple[Tensor, Tensor],
        *,
        num_classes: int,
        transform: Callable[[Tensor], Tensor],
        k: int = 200,
        temperature: float = 0.1,
        batch_size: int = 512,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ) -> None:
        self.encoder, self.transform = encoder, transform
        dev = torch.device(device)
        # small (a few thousand images): kept on the device, encoded again at every measurement
        self.bank_images, self.bank_labels = bank[0].to(dev), bank[1].cpu()
        self.val_images, self.val_labels = val[0].to(dev), val[1].cpu()
        self.num_classes, self.k, self.temperature = num_classes, k, temperature
        self.batch_size, self.device, self.channels_last = batch_size, dev, channels_last

    def __call__(self) -> float:
        kwargs: dict[str, Any] = {"batch_size": self.batch_size, "device": self.device, "channels_last": self.channels_last}
        bank = extract_features(self.encoder, self.bank_images, self.transform, **kwargs)
        val = extract_features(self.encoder, self.val_images, self.transform, **kwargs)
        pred = knn_predict(bank, self.bank_labels, val, num_classes=self.num_classes, k=self.k,
                           temperature=self.temperature)
        return float((pred == self.val_labels).double().mean())

    def describe(self) -> dict[str, Any]:
        """What is measured how (results.json's ``monitor`` beside the curve)."""
        bank = int(self.bank_labels.numel())
        return {"split": "validation", "bank": bank, "val": int(self.val_labels.numel()), "k": min(self.k, bank),
                "temperature": self.temperature}


def knn_monitor(split: ValidationSplit, encoder: nn.Module, *, bank_size: int, val_size: int, every: int | None,
                note: Callable[[str], None] | None = None, keep: Callable[[int, float], None] | None = None,
                **kwargs: Any) -> Validation:
    """The validation callback measuring :class:`KnnAccuracy` (``val_knn_acc``, higher is better)
    every ``every`` steps (None: after the last only) on ``split``: a seeded sample of ``bank_size`` training images outside
    the validation slice as the bank, ``val_size`` of the slice's images (seeded with the slice's
    seed, so runs that differ in ``train.seed`` are measured on the same images). ``keep``: called
    with (step, value) at each new best (the weights to keep). ``kwargs``: those of :class:`KnnAccuracy`."""
    rest, val = split.rest(), split.validation()
    bank = rest.subset(seeded_rows(len(rest), bank_size, split.seed * 7919 + 1))
    val = val.subset(seeded_rows(len(val), val_size, split.seed * 7919 + 2))
    assert bank.labels is not None and val.labels is not None
    accuracy = KnnAccuracy(encoder, (bank.images, bank.labels), (val.images, val.labels),
                           num_classes=split.full.num_classes, **kwargs)
    return Validation(accuracy, metric=METRIC, every=every, direction="max", describe=accuracy.describe(), note=note,
                      keep=keep)
