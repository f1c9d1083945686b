"""Accuracy while training: kNN of the current encoder on the validation split (``eval.monitor_every``).

Every N steps (on the first logged step at or after each multiple of N, and at the last step)
the encoder, in eval mode and without gradients, encodes a labelled bank (a seeded sample of
``eval.monitor_bank`` training images outside the validation split) and ``eval.monitor_val``
validation images; the weighted kNN classifier (:func:`contrastkit.evaluate.knn.knn_predict`,
the evaluation's own) labels the validation images from the bank. The accuracy joins the step's
log row (``val_knn_acc`` in train_log.csv, ``train/val_knn_acc`` in TensorBoard) and the curve
in results.json's ``monitor``; the encoder is back in train mode afterwards and no random number
is drawn, so training runs exactly as without the monitor. Its time counts towards the run's
elapsed time (a ``train.time_budget_minutes`` includes it) and is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from contrastkit.data.image.validation import ValidationSplit
from contrastkit.evaluate.features import extract_features
from contrastkit.evaluate.knn import knn_predict
from contrastkit.training.trainer import Callback, Trainer

METRIC = "val_knn_acc"


def seeded_rows(n: int, limit: int, seed: int) -> Tensor:
    """At most ``limit`` of ``0 .. n-1`` drawn with ``seed``, sorted (all when ``limit >= n``)."""
    if limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


class KnnMonitor(Callback):
    """kNN accuracy of ``encoder`` on ``val`` images against a labelled ``bank``, every ``every``
    steps (see the module). ``active``: whether this process measures (rank 0 under torchrun;
    the others return no values). Its curve is saved with the checkpoint and continues on resume."""

    def __init__(
        self,
        encoder: nn.Module,
        bank: tuple[Tensor, Tensor],
        val: tuple[Tensor, Tensor],
        *,
        num_classes: int,
        transform: Callable[[Tensor], Tensor],
        every: int,
        k: int = 200,
        temperature: float = 0.1,
        batch_size: int = 512,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        active: bool = True,
        note: Callable[[str], None] | None = None,
    ) -> None:
        self.encoder, self.transform, self.every = encoder, transform, every
        dev = torch.device(device)
        # small (a few thousand images): kept on the device, encoded again at every measurement
        self.bank_images, self.bank_labels = bank[0].to(dev), bank[1].cpu()
        self.val_images, self.val_labels = val[0].to(dev), val[1].cpu()
        self.num_classes, self.k, self.temperature = num_classes, k, temperature
        self.batch_size, self.device, self.channels_last = batch_size, dev, channels_last
        self.active, self.note = active, note
        self.curve: list[dict[str, float]] = []
        self.seconds = 0.0

    def measure(self, step: int) -> float:
        """The accuracy now (appended to the curve at ``step``)."""
        t0 = time.perf_counter()
        kwargs: dict[str, Any] = {"batch_size": self.batch_size, "device": self.device, "channels_last": self.channels_last}
        bank = extract_features(self.encoder, self.bank_images, self.transform, **kwargs)
        val = extract_features(self.encoder, self.val_images, self.transform, **kwargs)
        pred = knn_predict(bank, self.bank_labels, val, num_classes=self.num_classes, k=self.k,
                           temperature=self.temperature)
        accuracy = float((pred == self.val_labels).double().mean())
        seconds = time.perf_counter() - t0
        self.seconds += seconds
        self.curve.append({"step": step, "accuracy": accuracy, "seconds": seconds})
        if self.note is not None:
            self.note(f"step {step}: validation kNN accuracy {100 * accuracy:.1f}%")
        return accuracy

    def due(self, step: int, last_step: bool) -> bool:
        done = int(self.curve[-1]["step"]) if self.curve else 0
        return step > done and (step // self.every > done // self.every or last_step)

    def on_log(self, trainer: Trainer) -> dict[str, float]:
        if not self.active or not self.due(trainer.step, trainer.step >= trainer.total_steps):
            return {}
        return {METRIC: self.measure(trainer.step)}

    def finish(self, step: int) -> None:
        """Measure at ``step`` (the last one) unless the curve ends there already (a run stopped by
        its time budget between two log steps)."""
        if self.active and (not self.curve or int(self.curve[-1]["step"]) != step):
            self.measure(step)

    def results(self) -> dict[str, Any]:
        """results.json's ``monitor``: what was measured how, the curve and its last point."""
        return {
            "metric": "knn_accuracy", "split": "validation", "every": self.every,
            "bank": int(self.bank_labels.numel()), "val": int(self.val_labels.numel()),
            "k": min(self.k, int(self.bank_labels.numel())), "temperature": self.temperature,
            "curve": [dict(point) for point in self.curve],
            "final": dict(self.curve[-1]) if self.curve else None,
            "seconds": self.seconds,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"curve": [dict(point) for point in self.curve], "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curve = [dict(point) for point in state.get("curve", [])]
        self.seconds = float(state.get("seconds", 0.0))


def knn_monitor(split: ValidationSplit, encoder: nn.Module, *, bank_size: int, val_size: int, **kwargs: Any) -> KnnMonitor:
    """A :class:`KnnMonitor` on ``split``: a seeded sample of ``bank_size`` training images outside
    the validation slice as the bank, ``val_size`` of the slice's images (seeded with the slice's
    seed, so runs that differ in ``train.seed`` are measured on the same images). ``kwargs``:
    those of :class:`KnnMonitor`."""
    rest, val = split.rest(), split.validation()
    bank = rest.subset(seeded_rows(len(rest), bank_size, split.seed * 7919 + 1))
    val = val.subset(seeded_rows(len(val), val_size, split.seed * 7919 + 2))
    assert bank.labels is not None and val.labels is not None
    return KnnMonitor(encoder, (bank.images, bank.labels), (val.images, val.labels),
                      num_classes=split.full.num_classes, **kwargs)
