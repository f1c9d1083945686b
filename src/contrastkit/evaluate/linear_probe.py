"""Linear probe: multinomial logistic regression on frozen, standardised features.

The standard linear-evaluation protocol of self-supervised learning (e.g. SimCLR, Chen et al.
2020, arXiv:2002.05709): the L2 penalty is picked on a stratified held-out split of the training
set, the model is refitted on all training rows, and scored once on the test set. The objective
is ``mean cross-entropy + weight_decay / 2 * ||W||^2`` (bias unpenalised), minimised full-batch
with L-BFGS; it matches scikit-learn's ``LogisticRegression(C=1 / (weight_decay * n_train))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from contrastkit.errors import UserError
from contrastkit.evaluate.metrics import (
    check_features,
    check_labels,
    check_num_classes,
    classification_metrics,
)

DEFAULT_WEIGHT_DECAYS: tuple[float, ...] = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
"""Default L2 grid searched on the validation split."""


def standardize(train_x: Tensor, *others: Tensor, eps: float = 1e-6) -> list[Tensor]:
    """Scale every column to zero mean and unit variance using statistics of ``train_x`` only."""
    mean = train_x.mean(dim=0, keepdim=True)
    std = train_x.std(dim=0, keepdim=True, correction=0).clamp_min(eps)
    return [(t - mean) / std for t in (train_x, *others)]


def fit_logistic_regression(
    x: Tensor,
    y: Tensor,
    *,
    num_classes: int,
    weight_decay: float,
    max_iter: int = 200,
    init: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Minimise mean cross-entropy + weight_decay/2 ||W||^2 with full-batch L-BFGS.

    Returns (weight (C, D), bias (C,)) on x's device, as in ``nn.Linear``. Starts from zeros,
    or from ``init`` (warm start). Deterministic: no randomness is involved.
    """
    n, d = x.shape
    x = x.float()
    # Class-major logits (C, N): softmax over a short leading dim is far faster on CPU than
    # over the last dim of an (N, C) matrix, and the gradient is one (C, N) @ (N, D) product.
    xt = x.T.contiguous()
    rows = torch.arange(n, device=x.device)
    y = y.to(x.device)
    if init is None:
        w = torch.zeros(num_classes, d, device=x.device)
        b = torch.zeros(num_classes, 1, device=x.device)
    else:
        w = init[0].detach().float().clone()
        b = init[1].detach().float().reshape(num_classes, 1).clone()
    w.grad = torch.zeros_like(w)
    b.grad = torch.zeros_like(b)
    lam = float(weight_decay)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        logits = torch.addmm(b, w, xt)  # (C, N)
        top = logits.amax(dim=0, keepdim=True)
        probs = (logits - top).exp_()
        norm = probs.sum(dim=0, keepdim=True)
        lse = norm.log() + top
        loss = (lse.squeeze(0) - logits[y, rows]).mean()
        probs.div_(norm)
        probs[y, rows] -= 1.0  # d loss_i / d logits_i (times n)
        assert w.grad is not None and b.grad is not None
        torch.mm(probs, x, out=w.grad)
        w.grad.div_(n)
        torch.sum(probs, dim=1, keepdim=True, out=b.grad)
        b.grad.div_(n)
        if lam > 0:
            loss = loss + 0.5 * lam * w.pow(2).sum()
            w.grad.add_(w, alpha=lam)
        return loss

    with torch.no_grad():
        opt.step(closure)
    return w.detach(), b.detach().reshape(num_classes)


def predict_logistic_regression(x: Tensor, params: tuple[Tensor, Tensor]) -> Tensor:
    """Class predictions (int64) of a fitted (weight (C, D), bias (C,)) pair."""
    return torch.addmm(params[1], x, params[0].T).argmax(dim=1)


def stratified_split(
    y: Tensor, val_fraction: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Indices (train, val) with about ``val_fraction`` of each class in val.

    Each class keeps at least one row in train; a class with a single row goes to train only.
    """
    train_idx: list[Tensor] = []
    val_idx: list[Tensor] = []
    y_cpu = y.cpu()
    for c in torch.unique(y_cpu).tolist():
        rows = torch.nonzero(y_cpu == c).flatten()
        rows = rows[torch.randperm(rows.numel(), generator=generator)]
        n_val = min(round(val_fraction * rows.numel()), rows.numel() - 1)
        val_idx.append(rows[:n_val])
        train_idx.append(rows[n_val:])
    return torch.cat(train_idx).sort().values, torch.cat(val_idx).sort().values


def _check_weight_decays(weight_decays: Sequence[float] | None) -> list[float]:
    grid = list(DEFAULT_WEIGHT_DECAYS if weight_decays is None else weight_decays)
    if not grid:
        raise UserError("weight_decays is empty; give at least one value >= 0")
    for wd in grid:
        if isinstance(wd, bool) or not isinstance(wd, int | float) or not wd >= 0:
            raise UserError(f"weight_decays must hold numbers >= 0, got {wd!r}")
    return [float(wd) for wd in grid]


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    num_classes: int,
    weight_decays: Sequence[float] | None = None,
    val_fraction: float = 0.2,
    max_iter: int = 200,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Fit a linear probe with the L2 penalty chosen on a stratified validation split.

    Features are standardised (statistics from the training rows). Each value of
    ``weight_decays`` (default: 0, 1e-5 ... 1e-1) is fitted on ``1 - val_fraction`` of the
    training rows and scored on the rest; the best validation accuracy wins (ties go to the
    larger penalty). The probe is then refitted on all training rows and scored on the test
    set. With one grid value, or too few rows to hold any out, no search is done. Returns the
    test metrics plus ``weight_decay``, ``val_accuracy`` (per grid value) and ``train_accuracy``.
    """
    check_num_classes(num_classes)
    train_x = check_features(train_x, "train_x")
    test_x = check_features(test_x, "test_x")
    if test_x.shape[1] != train_x.shape[1]:
        raise UserError(f"test_x has {test_x.shape[1]} dims but train_x has {train_x.shape[1]}")
    train_y = check_labels(train_y, train_x.shape[0], num_classes, "train_y")
    test_y = check_labels(test_y, test_x.shape[0], num_classes, "test_y")
    grid = _check_weight_decays(weight_decays)
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise UserError(f"max_iter must be a positive integer, got {max_iter!r}")

    dev = torch.device(device)
    x_all = train_x.to(dev)
    y_all = train_y.to(dev)
    x_test = test_x.to(dev)
    generator = torch.Generator().manual_seed(seed)

    val_accuracy: dict[float, float] = {}
    warm: dict[float, tuple[Tensor, Tensor]] = {}
    chosen = grid[0]
    if len(grid) > 1:
        tr_idx, va_idx = stratified_split(train_y, val_fraction, generator)
        if va_idx.numel() > 0:
            tr_idx, va_idx = tr_idx.to(dev), va_idx.to(dev)
            x_tr, x_va = standardize(x_all[tr_idx], x_all[va_idx])
            y_tr, y_va = y_all[tr_idx], y_all[va_idx]
            params: tuple[Tensor, Tensor] | None = None
            # Strongest penalty first, each fit warm-started from the previous solution.
            for wd in sorted(set(grid), reverse=True):
                params = fit_logistic_regression(
                    x_tr, y_tr, num_classes=num_classes, weight_decay=wd,
                    max_iter=max_iter, init=params,
                )
                warm[wd] = params
                pred = predict_logistic_regression(x_va, params)
                val_accuracy[wd] = float((pred == y_va).float().mean())
            best = max(val_accuracy.values())
            chosen = max(wd for wd, acc in val_accuracy.items() if acc == best)

    x_tr_full, x_te = standardize(x_all, x_test)
    params_full = fit_logistic_regression(
        x_tr_full, y_all, num_classes=num_classes, weight_decay=chosen,
        max_iter=max_iter, init=warm.get(chosen),
    )
    train_pred = predict_logistic_regression(x_tr_full, params_full)
    test_pred = predict_logistic_regression(x_te, params_full).cpu()
    result = classification_metrics(test_y, test_pred, num_classes)
    result["weight_decay"] = chosen
    result["val_accuracy"] = {wd: val_accuracy[wd] for wd in sorted(val_accuracy)}
    result["train_accuracy"] = float((train_pred == y_all).float().mean())
    return result
