"""Weighted kNN classifier on frozen features (Wu et al. 2018, arXiv:1805.01978).

Cosine similarity to every training feature, the k most similar vote for their class with
weight exp(sim / T); the class with the largest total wins (ties: the lowest class id). This is
the monitor used by InstDisc, MoCo and SimCLR-style evaluations (k=200, T=0.1).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.errors import UserError
from contrastkit.evaluate.metrics import (
    check_features,
    check_labels,
    check_num_classes,
    classification_metrics,
)


def knn_predict(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    *,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> Tensor:
    """Predicted class (int64, CPU) for each test row by weighted kNN vote (Wu et al. 2018).

    Test rows are processed in blocks of ``batch_size``, so extra memory is
    O(batch_size x N_train). k is clipped to N_train. Runs on ``device`` (default: the
    device of ``train_feats``).
    """
    check_num_classes(num_classes)
    train_feats = check_features(train_feats, "train_feats")
    test_feats = check_features(test_feats, "test_feats")
    train_labels = check_labels(train_labels, train_feats.shape[0], num_classes, "train_labels")
    if test_feats.shape[1] != train_feats.shape[1]:
        raise UserError(
            f"test_feats has {test_feats.shape[1]} dims but train_feats has {train_feats.shape[1]}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"k must be a positive integer, got {k!r}")
    if not temperature > 0:
        raise UserError(f"temperature must be > 0, got {temperature!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
    dev = torch.device(device) if device is not None else train_feats.device
    bank = F.normalize(train_feats.to(dev), dim=1)
    bank_labels = train_labels.to(dev)
    k = min(k, bank.shape[0])
    preds: list[Tensor] = []
    with torch.no_grad():
        for start in range(0, test_feats.shape[0], batch_size):
            q = F.normalize(test_feats[start : start + batch_size].to(dev), dim=1)
            sim = q @ bank.T  # (block, N_train)
            top_sim, top_idx = sim.topk(k, dim=1)
            weights = (top_sim / temperature).exp()
            votes = torch.zeros(q.shape[0], num_classes, device=dev, dtype=weights.dtype)
            votes.scatter_add_(1, bank_labels[top_idx], weights)
            preds.append(votes.argmax(dim=1).cpu())
    return torch.cat(preds)


def knn_evaluate(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Weighted kNN accuracy and macro metrics of test features against a labelled bank."""
    check_num_classes(num_classes)
    test_feats = check_features(test_feats, "test_feats")
    test_labels = check_labels(test_labels, test_feats.shape[0], num_classes, "test_labels")
    pred = knn_predict(
        train_feats,
        train_labels,
        test_feats,
        num_classes=num_classes,
        k=k,
        temperature=temperature,
        batch_size=batch_size,
        device=device,
    )
    result = classification_metrics(test_labels.cpu(), pred, num_classes)
    result["k"] = min(k, int(train_feats.shape[0]))
    result["temperature"] = float(temperature)
    return result
