"""Optimisers (SGD, AdamW, LARS, SparseAdam) and the warm-up + cosine / linear learning-rate
schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from contrastkit.errors import check_choice
from contrastkit.training.options import OptimConfig


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017, arXiv:1708.03888).

    Parameter groups with `lars=False` (biases, norm layers) get plain SGD and no weight decay,
    as in SimCLR's large-batch recipe.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "eps": eps,
            "lars": True,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["lars"]:
                    if group["weight_decay"]:
                        grad = grad.add(p, alpha=group["weight_decay"])
                    p_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(grad)
                    trust = torch.where(
                        (p_norm > 0) & (g_norm > 0),
                        group["trust_coefficient"] * p_norm / (g_norm + group["eps"]),
                        torch.ones_like(p_norm),
                    )
                    grad = grad.mul(trust)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = grad.clone()
                else:
                    buf.mul_(group["momentum"]).add_(grad)
                p.add_(buf, alpha=-group["lr"])
        return loss


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights with decay; biases and normalisation parameters without (and no LARS)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars": True},
        {"params": no_decay, "weight_decay": 0.0, "lars": False},
    ]


def build_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """SGD (Nesterov-free, momentum), AdamW, LARS over the model's trainable parameters, or
    SparseAdam (for models whose parameters are all sparse embeddings: skip-gram)."""
    check_choice("optim.name", name, ("sgd", "adamw", "lars", "sparse_adam"))
    if name == "sparse_adam":
        return torch.optim.SparseAdam([p for p in model.parameters() if p.requires_grad], lr=lr)
    groups = parameter_groups(model, weight_decay)
    if name == "sgd":
        for g in groups:
            g.pop("lars")
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        for g in groups:
            g.pop("lars")
        return _adamw(groups, lr)
    return LARS(groups, lr=lr, momentum=momentum)


def _adamw(groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """AdamW; on the CPU its fused kernel (torch >= 2.4): one pass over each parameter instead of
    a dozen elementwise ops, about 7x faster per step for MiniLM's 22.6M parameters on one thread
    (what Hugging Face's Trainer uses by default). Elsewhere, or where torch has no fused CPU
    kernel, torch's default implementation."""
    params = [p for g in groups for p in g["params"]]
    if params and all(p.device.type == "cpu" and p.is_floating_point() and not p.is_sparse for p in params):
        try:
            return torch.optim.AdamW(groups, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):  # an older torch: no fused kernel for the CPU
            pass
    return torch.optim.AdamW(groups, lr=lr)


def peak_lr(optim: OptimConfig, batch_size: int) -> float:
    """The peak learning rate: ``optim.lr``, times batch / 256 with ``optim.scale_lr_by_batch``
    (the linear scaling rule)."""
    return optim.lr * batch_size / 256 if optim.scale_lr_by_batch else optim.lr


def lr_factor(
    progress: float, warmup_fraction: float, schedule: str = "cosine", final_fraction: float = 0.0
) -> float:
    """Multiplier of the base learning rate at `progress` in [0, 1]: linear warm-up, then a cosine
    or linear decay to ``final_fraction`` (or constant)."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup_fraction > 0 and progress < warmup_fraction:
        return max(progress / warmup_fraction, 0.01)
    if schedule == "constant":
        return 1.0
    span = max(1.0 - warmup_fraction, 1e-12)
    t = (progress - warmup_fraction) / span
    if schedule == "linear":
        return final_fraction + (1.0 - final_fraction) * (1.0 - t)
    return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * t))
