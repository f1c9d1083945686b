"""Building blocks shared by methods: MLP projection / prediction heads and their options, EMA
(momentum) targets with their schedules, and split BatchNorm (MoCo's shuffling-BN stand-in)."""

from __future__ import annotations

from contrastkit.nn.batchnorm import SplitBatchNorm2d, convert_split_batchnorm
from contrastkit.nn.heads import ACTIVATIONS, HeadOptions, MLPHead, ProjectionHead
from contrastkit.nn.momentum import MOMENTUM_SCHEDULES, MomentumEncoder, ema_update, frozen_copy, momentum_at

__all__ = [
    "ACTIVATIONS",
    "MOMENTUM_SCHEDULES",
    "HeadOptions",
    "MLPHead",
    "MomentumEncoder",
    "ProjectionHead",
    "SplitBatchNorm2d",
    "convert_split_batchnorm",
    "ema_update",
    "frozen_copy",
    "momentum_at",
]
