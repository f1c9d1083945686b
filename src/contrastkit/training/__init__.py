"""The one training loop (:class:`Trainer`), the steps it runs, optimisers and schedules,
checkpoints, loggers, progress and the runtime (device, seeds, processes)."""

from __future__ import annotations

from contrastkit.training.checkpoint import (
    CheckpointWriteError,
    atomic_save,
    load_checkpoint,
    load_latest_checkpoint,
    save_safetensors,
)
from contrastkit.training.optim import LARS, build_optimizer, lr_factor, peak_lr
from contrastkit.training.options import OptimConfig, TrainConfig
from contrastkit.training.runtime import (
    autocast_dtype,
    channels_last_for,
    evaluation_runtime,
    peak_memory_mb,
    resolve_device,
    run_device,
    setup_runtime,
)
from contrastkit.training.steps import GradientStep
from contrastkit.training.trainer import (
    Batches,
    Callback,
    Clock,
    Step,
    StepResult,
    Trainer,
    Training,
    TrainingDiverged,
    TrainSummary,
)

__all__ = [
    "LARS",
    "Batches",
    "Callback",
    "CheckpointWriteError",
    "Clock",
    "GradientStep",
    "OptimConfig",
    "Step",
    "StepResult",
    "TrainConfig",
    "TrainSummary",
    "Trainer",
    "Training",
    "TrainingDiverged",
    "atomic_save",
    "autocast_dtype",
    "build_optimizer",
    "channels_last_for",
    "evaluation_runtime",
    "load_checkpoint",
    "load_latest_checkpoint",
    "lr_factor",
    "peak_lr",
    "peak_memory_mb",
    "resolve_device",
    "run_device",
    "save_safetensors",
    "setup_runtime",
]
