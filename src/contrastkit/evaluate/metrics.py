"""Classification metrics (accuracy, macro precision/recall/F1, confusion matrix) in torch."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from contrastkit.errors import UserError


def check_features(x: Tensor, what: str) -> Tensor:
    """Return x as a float32 (N, D) tensor, or raise UserError naming what is wrong."""
    if not isinstance(x, Tensor):
        raise UserError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise UserError(f"{what} must be 2-D (N, D), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise UserError(f"{what} is empty; need at least one row")
    return x.float()


def check_labels(y: Tensor, n: int, num_classes: int, what: str) -> Tensor:
    """Return y as an int64 (n,) tensor with values in [0, num_classes), or raise UserError."""
    if not isinstance(y, Tensor):
        raise UserError(f"{what} must be a torch.Tensor, got {type(y).__name__}")
    if y.dim() != 1 or y.shape[0] != n:
        raise UserError(f"{what} must have shape ({n},), got {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise UserError(f"{what} must hold integer class ids, got dtype {y.dtype}")
    y = y.long()
    if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise UserError(
            f"{what} holds class ids in [{int(y.min())}, {int(y.max())}]; "
            f"allowed: 0 .. {num_classes - 1} (num_classes={num_classes})"
        )
    return y


def check_num_classes(num_classes: int) -> int:
    """Return num_classes if it is an int >= 2, else raise UserError."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise UserError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return num_classes


def confusion_matrix(y_true: Tensor, y_pred: Tensor, num_classes: int) -> Tensor:
    """(num_classes, num_classes) int64 counts; rows are true classes, columns predictions."""
    idx = y_true.long().cpu() * num_classes + y_pred.long().cpu()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def classification_metrics(y_true: Tensor, y_pred: Tensor, num_classes: int) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1 and the confusion matrix of integer predictions.

    Macro averages run over the classes that occur in y_true or y_pred (classes absent from
    both are ignored, as scikit-learn does with ``labels=None``); a ratio with a zero
    denominator counts as 0 (scikit-learn's ``zero_division=0``). Macro F1 is the mean of the
    per-class F1 scores. ``confusion`` is the full num_classes x num_classes matrix (rows:
    true class, columns: predicted class) as nested lists.
    """
    check_num_classes(num_classes)
    if not isinstance(y_true, Tensor) or not isinstance(y_pred, Tensor):
        raise UserError("y_true and y_pred must be torch.Tensors")
    if y_true.dim() != 1:
        raise UserError(f"y_true must be 1-D, got shape {tuple(y_true.shape)}")
    n = y_true.shape[0]
    y_true = check_labels(y_true, n, num_classes, "y_true")
    y_pred = check_labels(y_pred, n, num_classes, "y_pred")
    if n == 0:
        raise UserError("y_true is empty; need at least one sample to compute metrics")
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = cm.diag().double()
    support = cm.sum(dim=1).double()  # true counts per class
    predicted = cm.sum(dim=0).double()  # predicted counts per class
    present = (support > 0) | (predicted > 0)
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp_min(1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-300), torch.zeros_like(tp))
    return {
        "accuracy": float(tp.sum() / n),
        "precision_macro": float(precision[present].mean()),
        "recall_macro": float(recall[present].mean()),
        "f1_macro": float(f1[present].mean()),
        "num_samples": int(n),
        "confusion": cm.tolist(),
    }
