"""The generic trainer: loop, optimisers and schedules, checkpoints."""

from __future__ import annotations

from contrastkit.train.checkpoint import (
    CheckpointWriteError,
    atomic_save,
    load_checkpoint,
    load_latest_checkpoint,
    save_safetensors,
)
from contrastkit.train.optim import LARS, build_optimizer, lr_factor
from contrastkit.train.options import OptimConfig, TrainConfig
from contrastkit.train.trainer import (
    Trainer,
    TrainerOptions,
    TrainingDiverged,
    TrainSummary,
    autocast_dtype,
    resolve_device,
)

__all__ = [
    "LARS",
    "CheckpointWriteError",
    "OptimConfig",
    "TrainConfig",
    "TrainSummary",
    "Trainer",
    "TrainerOptions",
    "TrainingDiverged",
    "atomic_save",
    "autocast_dtype",
    "build_optimizer",
    "load_checkpoint",
    "load_latest_checkpoint",
    "lr_factor",
    "resolve_device",
    "save_safetensors",
]
