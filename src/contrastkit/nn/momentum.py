"""Exponential moving average (momentum) encoders with a schedule for the momentum.

The momentum/target network of MoCo (He et al. 2020, arXiv:1911.05722) and BYOL (Grill et
al. 2020, arXiv:2006.07733): ``target <- m * target + (1 - m) * online``, with ``m`` going
from ``base`` to ``final`` along a cosine (BYOL) or kept constant (MoCo v2).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from contrastkit.errors import UserError, check_choice

MOMENTUM_SCHEDULES = ("cosine", "constant")


def momentum_at(progress: float, base: float, final: float = 1.0, schedule: str = "cosine") -> float:
    """The momentum at ``progress`` in [0, 1] of training.

    cosine (BYOL): ``final - (final - base) * (cos(pi * progress) + 1) / 2``; constant: ``base``.
    """
    check_choice("momentum schedule", schedule, MOMENTUM_SCHEDULES)
    if not 0.0 <= base <= final <= 1.0:
        raise UserError(f"momentum needs 0 <= base <= final <= 1; got base={base}, final={final}")
    if schedule == "constant":
        return base
    p = min(max(progress, 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * p) + 1.0) / 2.0


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters take no gradient (the EMA target)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target <- momentum * target + (1 - momentum) * online`` for parameters; buffers
    (BatchNorm running statistics, counters) are copied from the online network."""
    t_params: list[torch.Tensor] = list(target.parameters())
    o_params: list[torch.Tensor] = [p.detach() for p in online.parameters()]
    if len(t_params) != len(o_params):
        raise ValueError("ema_update: target and online networks differ in structure")
    if t_params:
        torch._foreach_mul_(t_params, momentum)
        torch._foreach_add_(t_params, o_params, alpha=1.0 - momentum)
    for tb, ob in zip(target.buffers(), online.buffers(), strict=True):
        tb.copy_(ob)


class MomentumEncoder(nn.Module):
    """Keeps an EMA copy of ``online`` and updates it with the scheduled momentum.

    ``update(progress)`` is called once per optimiser step with the training progress in [0, 1];
    the current momentum is kept in a buffer so it is checkpointed with the model.
    """

    current: torch.Tensor

    def __init__(
        self, online: nn.Module, base: float = 0.99, final: float = 1.0, schedule: str = "cosine"
    ) -> None:
        super().__init__()
        momentum_at(0.0, base, final, schedule)  # validates
        self.target = frozen_copy(online)
        self.base, self.final, self.schedule = base, final, schedule
        self.register_buffer("current", torch.tensor(base, dtype=torch.float64))

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.target(*args)
        return out

    @torch.no_grad()
    def update(self, online: nn.Module, progress: float) -> float:
        m = momentum_at(progress, self.base, self.final, self.schedule)
        ema_update(self.target, online, m)
        self.current.fill_(m)
        return m

    def train(self, mode: bool = True) -> MomentumEncoder:
        # the target follows the online network's mode (BatchNorm uses batch statistics in
        # training, as in MoCo and BYOL); it never receives gradients either way
        super().train(mode)
        return self
