"""Transfer by end-to-end fine-tuning: a copy of the encoder plus a linear head, trained on labels.

Comparing a pretrained encoder with a freshly initialised one on the same labels measures what
the self-supervised pretraining bought (the fine-tuning protocol of SimCLR, Chen et al. 2020,
arXiv:2002.05709).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.errors import UserError, check_choice
from contrastkit.evaluate.features import extract_features
from contrastkit.evaluate.metrics import check_labels, check_num_classes, classification_metrics

OPTIMIZERS = ("adamw", "sgd")

TrainTransform = Callable[[Tensor, torch.Generator | None], Tensor]
EvalTransform = Callable[[Tensor], Tensor]


class _Classifier(nn.Module):
    """Encoder followed by a linear head on its flattened output."""

    def __init__(self, encoder: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.feature_dim = feature_dim
        self.head = nn.Linear(feature_dim, num_classes)
        # Zero init: deterministic, and the first steps do not disturb the encoder.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        z = self.encoder(x)
        if not isinstance(z, Tensor):
            raise UserError(f"encoder must return a Tensor, got {type(z).__name__}")
        z = z.reshape(z.shape[0], -1)
        if z.shape[1] != self.feature_dim:
            raise UserError(
                f"feature_dim={self.feature_dim} but the encoder outputs {z.shape[1]} features"
            )
        return self.head(z)


def _check_images(images: Tensor, what: str) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.dtype != torch.uint8:
        raise UserError(f"{what} must be a uint8 tensor of shape (N, C, H, W)")
    if images.shape[0] == 0:
        raise UserError(f"{what} is empty")


def _positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")


def finetune(
    encoder: nn.Module,
    feature_dim: int,
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    eval_transform: EvalTransform,
    train_transform: TrainTransform | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    optimizer: str = "adamw",
    momentum: float = 0.9,
    device: torch.device | str = "cpu",
    seed: int = 0,
    channels_last: bool = False,
    min_steps: int = 300,
) -> dict[str, Any]:
    """Fine-tune a deep copy of ``encoder`` with a zero-initialised linear head; test metrics.

    ``train_transform(uint8_batch_on_device, generator)`` augments training batches (default:
    ``eval_transform``, no augmentation). Optimiser: AdamW or SGD with momentum, learning rate
    on a per-step cosine schedule to 0. The caller's encoder is never modified. Deterministic
    given ``seed`` (global RNG state is restored afterwards). Returns the test metrics plus
    ``train_loss`` (mean over the last epoch) and ``train_accuracy`` (same epoch, augmented).
    Small label sets get more epochs so that training takes at least ``min_steps`` steps.
    """
    check_num_classes(num_classes)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    _check_images(train_images, "train_images")
    _check_images(test_images, "test_images")
    train_labels = check_labels(train_labels, train_images.shape[0], num_classes, "train_labels")
    test_labels = check_labels(test_labels, test_images.shape[0], num_classes, "test_labels")
    _positive_int("feature_dim", feature_dim)
    _positive_int("epochs", epochs)
    _positive_int("batch_size", batch_size)
    if not lr > 0:
        raise UserError(f"lr must be > 0, got {lr!r}")
    if not weight_decay >= 0:
        raise UserError(f"weight_decay must be >= 0, got {weight_decay!r}")

    dev = torch.device(device)
    n = train_images.shape[0]
    steps_per_epoch = max(1, n // batch_size) if n % batch_size == 1 else math.ceil(n / batch_size)
    epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
    total_steps = epochs * steps_per_epoch
    cuda_devices = [dev] if dev.type == "cuda" else []

    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        model = _Classifier(copy.deepcopy(encoder), feature_dim, num_classes).to(dev)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt: torch.optim.Optimizer
        if optimizer == "adamw":
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        else:
            opt = torch.optim.SGD(
                model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
            )
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )
        order_gen = torch.Generator().manual_seed(seed)
        aug_gen = torch.Generator(device=dev).manual_seed(seed + 1)
        labels_dev = train_labels.to(dev)
        model.train()
        epoch_loss = epoch_correct = 0.0
        with torch.enable_grad():
            for _ in range(epochs):
                perm = torch.randperm(n, generator=order_gen)
                epoch_loss = epoch_correct = 0.0
                seen = 0
                for step in range(steps_per_epoch):
                    # A trailing batch of one row is merged away (BatchNorm needs >= 2 rows).
                    stop = n if step == steps_per_epoch - 1 else (step + 1) * batch_size
                    idx = perm[step * batch_size : stop]
                    batch = train_images[idx].to(dev, non_blocking=True)
                    if train_transform is not None:
                        x = train_transform(batch, aug_gen)
                    else:
                        x = eval_transform(batch)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    y = labels_dev[idx.to(dev)]
                    logits = model(x)
                    loss = F.cross_entropy(logits, y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    epoch_loss += float(loss.detach()) * idx.numel()
                    epoch_correct += float((logits.detach().argmax(1) == y).sum())
                    seen += idx.numel()
                epoch_loss /= max(seen, 1)
                epoch_correct /= max(seen, 1)

        logits_test = extract_features(
            model, test_images, eval_transform, batch_size=max(batch_size, 256),
            device=dev, channels_last=channels_last,
        )
    pred = logits_test.argmax(dim=1)
    result = classification_metrics(test_labels, pred, num_classes)
    result["train_loss"] = epoch_loss
    result["train_accuracy"] = epoch_correct
    result["epochs"] = epochs
    result["steps"] = total_steps
    return result


def compare_finetune(
    pretrained: nn.Module, fresh: nn.Module, feature_dim: int, *args: Any, **kwargs: Any
) -> dict[str, Any]:
    """Fine-tune a pretrained and a freshly initialised encoder identically; both results.

    Extra arguments go to :func:`finetune`. Returns ``{"pretrained", "fresh",
    "accuracy_gain"}`` where the gain is pretrained minus fresh test accuracy.
    """
    res_pre = finetune(pretrained, feature_dim, *args, **kwargs)
    res_fresh = finetune(fresh, feature_dim, *args, **kwargs)
    return {
        "pretrained": res_pre,
        "fresh": res_fresh,
        "accuracy_gain": res_pre["accuracy"] - res_fresh["accuracy"],
    }
