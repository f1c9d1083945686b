"""Few-label evaluation: probes trained on k labelled examples per class, averaged over draws.

The semi-supervised protocol of SimCLR (Chen et al. 2020, arXiv:2002.05709) in its cheap,
frozen-feature form: for each k, ``draws`` random labelled subsets are drawn, a probe is trained
on each and scored on the full test set; the mean and standard deviation of accuracy are
reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from contrastkit.errors import UserError, check_choice
from contrastkit.evaluate.knn import knn_evaluate
from contrastkit.evaluate.linear_probe import linear_probe
from contrastkit.evaluate.metrics import check_features, check_labels, check_num_classes

METHODS = ("linear", "knn")

FIXED_WEIGHT_DECAY = 0.1
"""L2 penalty used below ``validate_from_shots`` labels per class, where a held-out split would
leave (almost) nothing to train or validate on. Strong regularisation pushes the probe towards a
class-mean (centroid) classifier, the sensible choice with one or a few labels per class; on
standardised features accuracy varies little between 1e-2 and 1."""


def sample_k_per_class(y: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Sorted indices of k random rows of every class present in y (each class needs >= k)."""
    y_cpu = y.cpu()
    picked = []
    for c in torch.unique(y_cpu).tolist():
        rows = torch.nonzero(y_cpu == c).flatten()
        picked.append(rows[torch.randperm(rows.numel(), generator=generator)[:k]])
    return torch.cat(picked).sort().values


def few_label_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    num_classes: int,
    shots: Sequence[int] = (1, 10, 100),
    draws: int = 5,
    seed: int = 0,
    method: str = "linear",
    validate_from_shots: int = 10,
    fixed_weight_decay: float = FIXED_WEIGHT_DECAY,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Accuracy with k labels per class, mean and std over ``draws`` random labelled subsets.

    Classes are those present in ``train_y``; a k above the smallest class size is skipped and
    listed under ``skipped`` with the reason. ``method="linear"`` trains the linear probe, with
    its weight-decay search when k >= ``validate_from_shots`` and ``fixed_weight_decay``
    otherwise; ``method="knn"`` uses the weighted kNN classifier on the labelled subset. Draw i
    of shot k uses its own generator seeded from (seed, k, i). ``std`` is the sample standard
    deviation (0 with one draw). Result: ``{"method", "draws", "shots": {k: {"mean", "std",
    "accuracies", ...}}, "skipped": {k: reason}}``.
    """
    check_num_classes(num_classes)
    check_choice("few-label method", method, METHODS)
    train_x = check_features(train_x, "train_x")
    test_x = check_features(test_x, "test_x")
    train_y = check_labels(train_y, train_x.shape[0], num_classes, "train_y")
    test_y = check_labels(test_y, test_x.shape[0], num_classes, "test_y")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise UserError(f"draws must be a positive integer, got {draws!r}")
    shot_list = list(shots)
    if not shot_list:
        raise UserError("shots is empty; give at least one number of labels per class")
    for k in shot_list:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UserError(f"shots must hold positive integers, got {k!r}")

    counts = torch.bincount(train_y, minlength=num_classes)
    present = counts[counts > 0]
    smallest = int(present.min())
    smallest_class = int(torch.nonzero(counts == smallest).flatten()[0])

    results: dict[int, dict[str, Any]] = {}
    skipped: dict[int, str] = {}
    for k in sorted(set(shot_list)):
        if k > smallest:
            skipped[k] = (
                f"{k} labels per class requested but class {smallest_class} has only "
                f"{smallest} training rows"
            )
            continue
        accuracies: list[float] = []
        weight_decays: list[float] = []
        for draw in range(draws):
            generator = torch.Generator().manual_seed(_draw_seed(seed, k, draw))
            idx = sample_k_per_class(train_y, k, generator)
            if method == "linear":
                grid = None if k >= validate_from_shots else [fixed_weight_decay]
                res = linear_probe(
                    train_x[idx], train_y[idx], test_x, test_y,
                    num_classes=num_classes, weight_decays=grid,
                    seed=_draw_seed(seed, k, draw), device=device,
                )
                weight_decays.append(float(res["weight_decay"]))
            else:
                res = knn_evaluate(
                    train_x[idx], train_y[idx], test_x, test_y,
                    num_classes=num_classes, device=device,
                )
            accuracies.append(float(res["accuracy"]))
        acc = torch.tensor(accuracies, dtype=torch.float64)
        entry: dict[str, Any] = {
            "mean": float(acc.mean()),
            "std": float(acc.std()) if draws > 1 else 0.0,
            "accuracies": accuracies,
            "num_labels": k * int(present.numel()),
        }
        if method == "linear":
            entry["weight_decays"] = weight_decays
        results[k] = entry
    return {"method": method, "draws": draws, "shots": results, "skipped": skipped}


def _draw_seed(seed: int, k: int, draw: int) -> int:
    """A distinct, reproducible 63-bit seed for (seed, shots, draw)."""
    return ((seed * 1_000_003 + k) * 1_000_033 + draw) % (2**63 - 1)
