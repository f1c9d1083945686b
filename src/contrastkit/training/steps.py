"""The step most tasks train with: one optimiser over one model whose ``training_step(batch)``
returns a loss. Tasks with other updates (a GAN's two players, an agent acting in an
environment, skip-gram's hand-written sparse SGD) bring their own :class:`~contrastkit.training.Step`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from contrastkit.negatives.distributed import world
from contrastkit.training.optim import build_optimizer, peak_lr
from contrastkit.training.options import OptimConfig, TrainConfig
from contrastkit.training.runtime import autocast_dtype
from contrastkit.training.trainer import Clock, StepResult


def sync_batchnorm(model: nn.Module, device: torch.device, note: Callable[[str], None] | None = None) -> nn.Module:
    """BatchNorm over the global batch under torchrun (SyncBatchNorm, GPUs only)."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if note is not None:
        note("note: SyncBatchNorm needs GPUs; on CPU each process normalises its own batch")
    return model


class _TrainingStep(nn.Module):
    """The method's training step as a forward pass, for DistributedDataParallel's hooks."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: dict[str, Any]) -> Any:
        return self.method.training_step(batch)  # type: ignore[operator]


class GradientStep:
    """Forward under autocast (``train.precision``), backward, gradient clipping
    (``optim.grad_clip``), the optimiser step at the scheduled learning rate, then the method's
    end-of-step update (EMA targets, schedules). Under torchrun the model's training step runs
    inside DistributedDataParallel. The model must have ``training_step(batch) -> StepOutput``
    and ``on_step_end(step, total_steps)``."""

    def __init__(
        self, model: nn.Module, optim: OptimConfig, train: TrainConfig, *, device: torch.device,
        note: Callable[[str], None] | None = None,
    ) -> None:
        _, world_size = world()
        if world_size > 1 and train.sync_batchnorm:
            model = sync_batchnorm(model, device, note)
        self.model = model.to(device)
        self.model.train()
        self.optim_cfg = optim
        self.ddp: nn.Module | None = None
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(
                _TrainingStep(self.model), device_ids=[device.index] if device.type == "cuda" else None
            )
        self.lr = peak_lr(optim, train.batch_size)
        self.optimizer = build_optimizer(model, optim.name, self.lr, optim.weight_decay, optim.momentum)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.amp_dtype = autocast_dtype(train.precision, device)
        self.device = device
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        if train.compile:
            for module in self.model.children():
                module.compile()

    def __call__(self, batch: Any, clock: Clock) -> StepResult:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * clock.lr_factor
        method: Any = self.model
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            out = self.ddp(batch) if self.ddp is not None else method.training_step(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        if self.optim_cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.optim_cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        method.on_step_end(clock.step, clock.schedule_total)
        out.logs["lr"] = self.base_lrs[0] * clock.lr_factor
        result: StepResult = out
        return result

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
