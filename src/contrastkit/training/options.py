"""The trainer's options: the recipe's ``optim:`` and ``train:`` sections."""

from __future__ import annotations

from dataclasses import dataclass

from contrastkit.errors import UserError
from contrastkit.options import option

OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw", "lars", "sparse_adam")
LR_SCHEDULES: tuple[str, ...] = ("cosine", "linear", "constant")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
LOGGERS: tuple[str, ...] = ("csv", "tensorboard", "mlflow", "wandb")  # see training/loggers.py


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule (linear warm-up, then cosine decay)."""

    name: str = option("adamw", "optimiser", choices=OPTIMIZERS)
    lr: float = option(1e-3, "peak learning rate", gt=0)
    weight_decay: float = option(1e-4, "weight decay", ge=0)
    momentum: float = option(0.9, "SGD / LARS momentum", ge=0, lt=1)
    warmup_fraction: float = option(0.05, "share of training with a linear warm-up", ge=0, lt=1)
    schedule: str = option("cosine", "learning rate after the warm-up", choices=LR_SCHEDULES)
    final_lr_fraction: float = option(0.0, "final learning rate / peak (cosine)", ge=0, le=1)
    grad_clip: float | None = option(None, "clip the gradient norm at this value", gt=0)
    scale_lr_by_batch: bool = option(False, "lr × batch_size / 256 (the linear scaling rule)")


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = option(10, "passes over the training data", ge=1)
    max_steps: int | None = option(None, "stop after this many steps (overrides epochs)", ge=1)
    time_budget_minutes: float | None = option(None, "stop after this much training time", gt=0)
    batch_size: int = option(256, "global batch (split evenly over processes under torchrun)", ge=2)
    seed: int = option(0, "seed of weights, data order and augmentations")
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps")
    precision: str = option("auto", "autocast dtype (auto: bf16 on CUDA, fp32 elsewhere)", choices=PRECISIONS)
    channels_last: bool = option(True, "channels_last memory format for image batches")
    compile: bool = option(False, "torch.compile the model's modules")
    checkpoint_every: int = option(500, "steps between checkpoints", ge=1)
    log_every: int = option(10, "steps between log rows", ge=1)
    num_threads: int | None = option(None, "torch CPU threads (default: torch's choice)", ge=1)
    keep_freed_memory: bool = option(
        True, "glibc: keep freed CPU memory for reuse instead of page-faulting it in again every step"
    )
    progress: bool = option(True, "progress bar")
    sync_batchnorm: bool = option(True, "SyncBatchNorm under torchrun on GPUs")
    dist_timeout_minutes: float = option(10.0, "timeout of every collective under torchrun", gt=0)
    loggers: list[str] = option(
        help="where training logs go (mlflow, wandb: the trackers extra)",
        factory=lambda: ["csv", "tensorboard"], choices=LOGGERS,
    )

    def check_values(self, prefix: str) -> None:
        kind = self.device.split(":")[0]
        if self.device != "auto" and kind not in ("cpu", "cuda", "mps"):
            raise UserError(
                f"{prefix}.device {self.device!r} is not allowed; use auto, cpu, cuda, cuda:N or mps"
            )
        twice = sorted({name for name in self.loggers if self.loggers.count(name) > 1})
        if twice:
            raise UserError(f"{prefix}.loggers lists {', '.join(twice)} more than once")
