"""Linear probes of a frozen encoder, by two protocols (``eval.linear_protocol``).

``lbfgs`` (:func:`linear_probe`): multinomial logistic regression on frozen, standardised
features, computed once without augmentation. The L2 penalty is picked on a stratified held-out
split of the training set, the model is refitted on all training rows, and scored once on the
test set. The objective is ``mean cross-entropy + weight_decay / 2 * ||W||^2`` (bias
unpenalised), minimised full-batch with L-BFGS; it matches scikit-learn's
``LogisticRegression(C=1 / (weight_decay * n_train))``. Quick and deterministic.

``sgd`` (:func:`linear_probe_sgd`): the protocol of the published tables (SimCLR, Chen et al.
2020, arXiv:2002.05709; MoCo; solo-learn and lightly's benchmarks): a linear layer on the frozen
encoder (eval mode: BatchNorm uses its running statistics) trained with SGD, momentum 0.9,
a learning rate scaled with the batch (``lr * batch / 256``) and decayed to 0 on a per-step
cosine, no weight decay by default, for N epochs (100 published), every batch freshly augmented
with a random resized crop and a horizontal flip and encoded again; tested on the evaluation
transform (no augmentation). Its schedule is recorded with the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.data.image.mapped import take
from contrastkit.errors import UserError
from contrastkit.evaluate.features import extract_features
from contrastkit.evaluate.metrics import (
    check_features,
    check_labels,
    check_num_classes,
    classification_metrics,
)

LINEAR_PROTOCOLS = ("lbfgs", "sgd", "both")
SGD_EPOCHS_GPU, SGD_EPOCHS_CPU = 100, 10  # default epochs of the SGD protocol: published, and affordable on CPU

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


def sgd_epochs(epochs: int | None, device: torch.device | str) -> int:
    """The SGD protocol's epochs: ``epochs``, else 100 on a GPU (as published) and 10 on CPU."""
    if epochs is not None:
        return epochs
    return SGD_EPOCHS_GPU if torch.device(device).type == "cuda" else SGD_EPOCHS_CPU


def linear_probe_sgd(
    encoder: nn.Module,
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    train_transform: Callable[[Tensor, torch.Generator | None], Tensor],
    eval_transform: Callable[[Tensor], Tensor],
    epochs: int = SGD_EPOCHS_CPU,
    batch_size: int = 256,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    augmentation: str = "random resized crop + horizontal flip",
    seed: int = 0,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
) -> dict[str, Any]:
    """Train a linear layer on the frozen ``encoder`` by the published protocol (see the module);
    test metrics plus ``protocol`` ("sgd"), its ``schedule`` and the last epoch's ``train_loss``
    and ``train_accuracy`` (on augmented images).

    ``train_transform(uint8 batch on the device, generator)`` augments and normalises;
    ``eval_transform`` normalises the test images. The encoder is left as it was (mode and
    weights); the global random state too. A batch's rows are read in sorted order (from a
    memory-mapped store: by index, not through the map).
    """
    check_num_classes(num_classes)
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{name} must be a positive integer, got {value!r}")
    if not lr > 0 or not weight_decay >= 0 or not 0 <= momentum < 1:
        raise UserError(f"need lr > 0, weight_decay >= 0 and momentum in [0, 1); got {lr!r}, {weight_decay!r}, {momentum!r}")
    n = int(train_images.shape[0])
    train_labels = check_labels(train_labels, n, num_classes, "train_labels")
    test_labels = check_labels(test_labels, int(test_images.shape[0]), num_classes, "test_labels")
    dev = torch.device(device)
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    peak = lr * batch_size / 256
    was_training = encoder.training
    encoder.eval()
    labels = train_labels.to(dev)
    loss_sum = correct = 0.0
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        order = torch.Generator().manual_seed(seed)
        aug = torch.Generator(device=dev).manual_seed(seed + 1)
        head: nn.Linear | None = None
        opt: torch.optim.SGD | None = None
        step = 0
        try:
            for _ in range(epochs):
                loss_sum = correct = 0.0
                perm = torch.randperm(n, generator=order)
                for b in range(steps_per_epoch):
                    rows = perm[b * batch_size : (b + 1) * batch_size].sort().values  # a batch's order is immaterial
                    x = train_transform(take(train_images, rows).to(dev, non_blocking=True), aug)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    with torch.no_grad():
                        feats = encoder(x).reshape(x.shape[0], -1).float()
                    if head is None or opt is None:
                        head = nn.Linear(feats.shape[1], num_classes).to(dev)
                        opt = torch.optim.SGD(head.parameters(), lr=peak, momentum=momentum, weight_decay=weight_decay)
                    for group in opt.param_groups:
                        group["lr"] = peak * 0.5 * (1.0 + math.cos(math.pi * step / total))
                    y = labels[rows.to(dev)]
                    with torch.enable_grad():
                        logits = head(feats)
                        loss = F.cross_entropy(logits, y)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                    opt.step()
                    step += 1
                    loss_sum += float(loss.detach()) * rows.numel()
                    correct += float((logits.detach().argmax(1) == y).sum())
        finally:
            encoder.train(was_training)
        assert head is not None
        probe = nn.Sequential(encoder, nn.Flatten(), head).train(was_training)  # extract_features restores this mode
        logits_test = extract_features(probe, test_images, eval_transform, batch_size=batch_size, device=dev,
                                       channels_last=channels_last)
    result = classification_metrics(test_labels, logits_test.argmax(dim=1), num_classes)
    result["protocol"] = "sgd"
    result["schedule"] = {
        "optimizer": "sgd", "momentum": momentum, "nesterov": False, "lr": peak, "base_lr": lr,
        "lr_scaling": "lr * batch_size / 256", "lr_schedule": "cosine to 0, per step, no warm-up",
        "weight_decay": weight_decay, "batch_size": batch_size, "epochs": epochs, "steps": total,
        "train_augmentation": augmentation, "test_transform": "evaluation transform (resize, normalise)",
        "encoder": "frozen, eval mode (BatchNorm running statistics)",
    }
    result["train_loss"] = loss_sum / n
    result["train_accuracy"] = correct / n
    return result

