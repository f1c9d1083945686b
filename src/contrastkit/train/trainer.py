"""The one generic training loop: any method with `training_step(batch) -> StepOutput`.

Handles the optimiser and warm-up + cosine schedule, mixed precision, channels_last, gradient
clipping, progress (tqdm), logs (``train.loggers``: CSV, TensorBoard, mlflow, W&B; see
:mod:`contrastkit.train.loggers`), atomic checkpoints and exact resume, and stops cleanly on a
non-finite loss.
"""

from __future__ import annotations

import math
import re
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from contrastkit.negatives.distributed import world
from contrastkit.train.checkpoint import (
    CheckpointWriteError,
    atomic_save,
    load_checkpoint,
    load_latest_checkpoint,
)
from contrastkit.train.loggers import Loggers, check_installed
from contrastkit.train.optim import build_optimizer, lr_factor
from contrastkit.train.options import OptimConfig, TrainConfig
from contrastkit.train.preemption import (
    DistributedFailure,
    Preempted,
    PreemptionHandler,
    is_communication_failure,
)

CHECKPOINT_FORMAT = "contrastkit-checkpoint-v1"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None for full precision; bf16 by default on CUDA."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "fp16":
        return torch.float16
    return torch.bfloat16


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: allocated GPU memory on CUDA, else the peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@dataclass
class TrainerOptions:
    """Loop settings: the recipe's optim and train sections, whether to show progress, and the
    whole config (stored in every checkpoint)."""

    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    progress: bool = True
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def lr(self) -> float:
        """The peak learning rate, scaled by batch / 256 with optim.scale_lr_by_batch."""
        lr = self.optim.lr
        return lr * self.train.batch_size / 256 if self.optim.scale_lr_by_batch else lr


@dataclass
class TrainSummary:
    """What a finished (or stopped) training run did."""

    steps: int
    epochs_done: float
    seconds: float
    images_per_sec: float
    final_loss: float
    stopped_by: str
    peak_memory_mb: float = 0.0
    collapsed_at_step: int | None = None


def _batch_rows(batch: dict[str, Any], default: int) -> int:
    """Samples in a batch (for the throughput): the first view's rows, the users of a
    recommendation batch, the corpus tokens of a skip-gram batch, else the loader's batch size."""
    if "tokens" in batch:
        return int(batch["tokens"])
    if "views" in batch:
        return int(batch["views"][0].shape[0])
    if "users" in batch:
        return len(batch["users"])
    return default


class _TrainingStep(nn.Module):
    """The method's training step as a forward pass, for DistributedDataParallel's hooks."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: dict[str, Any]) -> Any:
        return self.method.training_step(batch)  # type: ignore[operator]


class Trainer:
    """Train `model` on batches from `loader`, writing logs and checkpoints into `run_dir`.

    ``model``: an nn.Module with ``training_step(batch) -> StepOutput`` and ``on_step_end(step,
    total_steps)``. ``loader``: ``len()`` (steps per epoch), ``batch_size``, ``batches(epoch,
    start)`` (the batches of an epoch from the ``start``-th on, deterministic in the epoch), and
    ``state_dict()`` / ``load_state_dict()`` for exact resume.
    """

    def __init__(
        self,
        model: nn.Module,
        loader: Any,
        run_dir: Path,
        options: TrainerOptions,
        *,
        device: torch.device,
        callbacks: list[Callable[[int, dict[str, float]], None]] | None = None,
    ) -> None:
        self.model = model.to(device)
        self.rank, self.world_size = world()
        self.is_main = self.rank == 0
        # under torchrun: DistributedDataParallel around the method's training step
        self.step_module: nn.Module | None = None
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.step_module = DistributedDataParallel(
                _TrainingStep(self.model), device_ids=[device.index] if device.type == "cuda" else None
            )
        check_installed(options.train.loggers)
        self.loader = loader
        self.run_dir = Path(run_dir)
        self.opt = options
        self.device = device
        self.callbacks = callbacks or []
        self.optimizer = build_optimizer(
            model, options.optim.name, options.lr, options.optim.weight_decay, options.optim.momentum
        )
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.amp_dtype = autocast_dtype(options.train.precision, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.elapsed = 0.0
        self.stop_reason: str | None = None  # set by a callback (e.g. early stopping) to end fit()
        steps_per_epoch = len(loader)
        self.total_steps = options.train.max_steps or options.train.epochs * steps_per_epoch
        self.checkpoint_path = self.run_dir / "checkpoints" / "last.pt"
        if options.train.compile:
            for module in self.model.children():
                module.compile()

    # -------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "elapsed": self.elapsed,
            "total_steps": self.total_steps,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "loader": self.loader.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "config": self.opt.config,
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def save_checkpoint(self) -> None:
        """Atomic checkpoint by rank 0, the one before it kept as previous.pt; under DDP every
        rank's loader and RNG state go into it, and every rank learns whether it was written."""
        state = self.state_dict()
        if self.world_size > 1:
            import torch.distributed as dist

            per_rank: list[Any] = [None] * self.world_size
            dist.all_gather_object(per_rank, {"loader": state["loader"], "torch_rng": state["torch_rng"]})
            state["ranks"] = per_rank
            state["world_size"] = self.world_size
        failure: CheckpointWriteError | None = None
        if self.is_main:
            try:
                atomic_save(state, self.checkpoint_path, keep_previous=True)
            except CheckpointWriteError as exc:
                failure = exc
        if self.world_size > 1:
            import torch.distributed as dist

            flag = torch.tensor([float(failure is not None)], device=self.device)
            dist.broadcast(flag, 0)
            if flag.item() and failure is None:
                failure = CheckpointWriteError(f"rank 0 could not write the checkpoint {self.checkpoint_path}")
        if failure is not None:
            raise failure

    def load_checkpoint(self, path: Path | None = None) -> None:
        """Restore from ``path``, or from the run's newest readable checkpoint (last.pt, else
        previous.pt with a warning)."""
        if path is None:
            state, _ = load_latest_checkpoint(self.checkpoint_path.parent, map_location=self.device)
        else:
            state = load_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        saved_world = int(state.get("world_size", 1))
        if saved_world == self.world_size:
            own = state["ranks"][self.rank] if "ranks" in state else state
            self.loader.load_state_dict(own["loader"])
            torch.set_rng_state(own["torch_rng"].cpu())
        else:  # another process count: same weights and step, fresh per-rank data streams
            if self.is_main:
                warnings.warn(
                    f"resuming a {saved_world}-process run with {self.world_size} process(es): weights, "
                    "optimiser and step continue; data order and augmentations differ from an "
                    "uninterrupted run",
                    RuntimeWarning,
                    stacklevel=2,
                )
            torch.manual_seed(int(state["step"]) * 7919 + self.rank)
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.elapsed = float(state["elapsed"])

    # -------------------------------------------------------------------- logs

    def _loggers(self) -> Loggers:
        """The configured loggers (rank 0 only), continuing from the current step (after a
        resume, the CSV rows and TensorBoard events past the checkpoint are dropped)."""
        if not self.is_main:
            return Loggers([])
        return Loggers.open(self.opt.train.loggers, self.run_dir, start_step=self.step, config=self.opt.config)

    # -------------------------------------------------------------------- loop

    def _progress(self) -> float:
        frac = self.step / max(self.total_steps, 1)
        if self.opt.train.time_budget_minutes:
            frac = max(frac, self.elapsed / (60.0 * self.opt.train.time_budget_minutes))
        return frac

    def _set_lr(self) -> float:
        o = self.opt.optim
        factor = lr_factor(self._progress(), o.warmup_fraction, o.schedule, o.final_lr_fraction)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        return self.base_lrs[0] * factor

    def _schedule_total(self) -> int:
        """Total steps as methods' schedules (e.g. EMA momentum) should see them: under a time
        budget, the steps the budget is expected to allow at the speed so far."""
        budget = self.opt.train.time_budget_minutes
        if not budget or self.elapsed <= 0 or self.step == 0:
            return self.total_steps
        expected = int(self.step * 60.0 * budget / self.elapsed)
        return max(self.step + 1, min(self.total_steps, expected))

    def _budget_spent(self) -> bool:
        budget = self.opt.train.time_budget_minutes
        return bool(budget) and self.elapsed >= 60.0 * budget  # type: ignore[operator]

    def _optimise(self, method: Any, batch: dict[str, Any]) -> tuple[Any, float]:
        """One step: forward under autocast, divergence check, backward, clip, optimiser step,
        the method's end-of-step update. Returns the step's output and learning rate."""
        lr = self._set_lr()
        if self._sgd_fast_path(method):  # the method applies plain SGD itself (e.g. skip-gram)
            with torch.no_grad():
                out = method.training_step({**batch, "sgd_lr": lr})
            self._check_finite(out.loss)
            method.on_step_end(self.step, self._schedule_total())
            return out, lr
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            out = self.step_module(batch) if self.step_module is not None else method.training_step(batch)
        loss = out.loss
        self._check_finite(loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.opt.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.opt.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        method.on_step_end(self.step, self._schedule_total())
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return out, lr

    def _sgd_fast_path(self, method: Any) -> bool:
        """Plain SGD (no momentum, weight decay, clipping or autocast) on a method that can apply
        it itself, in one process: the trainer then leaves the update to the method."""
        o = self.opt.optim
        plain = o.name == "sgd" and o.momentum == 0 and o.weight_decay == 0 and not o.grad_clip
        return plain and getattr(method, "sgd_fast_path", False) and self.world_size == 1 and self.amp_dtype is None

    def _check_finite(self, loss: torch.Tensor) -> None:
        if torch.isfinite(loss.detach()):
            return
        kept = (
            f"the last good checkpoint (step {self._checkpoint_step()}) is kept in {self.checkpoint_path}"
            if self.checkpoint_path.exists()
            else "no checkpoint had been written yet"
        )
        raise TrainingDiverged(
            f"loss became {float(loss.detach())} at step {self.step + 1}; {kept}. "
            "Lower optim.lr, raise method.temperature or set optim.grad_clip."
        )

    def _log(self, loggers: Loggers, lr: float, images_per_sec: float, logs: dict[str, float]) -> None:
        row = {
            "epoch": self.step / len(self.loader),
            "lr": lr,
            "images_per_sec": images_per_sec,
            "elapsed_sec": self.elapsed,
            **logs,
        }
        loggers.log_metrics(self.step, row)

    def fit(self) -> TrainSummary:
        """Run until the step count (or time budget) is reached; checkpoint along the way.

        SIGTERM / SIGUSR1 / SIGINT end the run after the current step with a checkpoint of it
        (:class:`~contrastkit.train.preemption.Preempted` is raised once it is written); a
        failed collective under torchrun raises :class:`DistributedFailure`.
        """
        try:
            with PreemptionHandler(verbose=self.is_main) as signals:
                summary = self._fit(signals)
        except (Preempted, TrainingDiverged, CheckpointWriteError):
            raise
        except RuntimeError as exc:
            if self.world_size > 1 and is_communication_failure(exc):
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                first = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0]  # no C++ source location
                raise DistributedFailure(
                    f"another process of the job stopped or timed out ({first[:160]}); the last checkpoint "
                    f"(step {self._checkpoint_step()}) is kept"
                ) from None
            raise
        return summary

    def _fit(self, signals: PreemptionHandler) -> TrainSummary:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.model.train()
        method: Any = self.model
        steps_per_epoch = len(self.loader)
        start_step, start_elapsed = self.step, self.elapsed
        window_images, window_time = 0, 0.0
        images_per_sec = 0.0
        last_loss = float("nan")
        stopped_by = self.stop_reason or "steps"  # a callback may have ended the run already
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not self.opt.progress or not self.is_main,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            leave=True,
            mininterval=0.5 if sys.stderr.isatty() else 15.0,
        )
        with self._loggers() as loggers:
            # wall-clock of the whole loop: batch assembly and augmentation, step, logs, checkpoints
            t0 = time.perf_counter()
            while self.step < self.total_steps and stopped_by == "steps":
                for batch in self.loader.batches(self.epoch, self.batch_in_epoch):
                    out, lr = self._optimise(method, batch)
                    now = time.perf_counter()
                    dt, t0 = now - t0, now
                    self.elapsed += dt
                    self.step += 1
                    self.batch_in_epoch += 1
                    window_images += _batch_rows(batch, self.loader.batch_size) * self.world_size
                    window_time += dt
                    last_loss = out.logs.get("loss", float(out.loss.detach()))
                    bar.update(1)
                    if self.step % self.opt.train.log_every == 0 or self.step == self.total_steps:
                        images_per_sec = window_images / max(window_time, 1e-9)
                        window_images, window_time = 0, 0.0
                        self._log(loggers, lr, images_per_sec, out.logs)
                        bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_sec:.0f}")
                    for callback in self.callbacks:
                        callback(self.step, out.logs)
                    if self.stop_reason:
                        stopped_by = self.stop_reason
                        break
                    if self.step % self.opt.train.checkpoint_every == 0:
                        self.save_checkpoint()
                    signalled, spent = signals.stop_requested(self.world_size, self.device, self._budget_spent())
                    if signalled:
                        stopped_by = "preempted"
                        loggers.status = "killed"
                        break
                    if self.step >= self.total_steps:
                        break
                    if spent:
                        stopped_by = "time_budget"
                        break
                else:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    continue
                if self.batch_in_epoch >= steps_per_epoch:
                    self.epoch += 1
                    self.batch_in_epoch = 0
            # each step's time runs to the end of the next one's; the last step's callbacks (a final
            # validation, say) and checkpoint are counted here
            self.elapsed += time.perf_counter() - t0
        bar.close()
        self.save_checkpoint()
        if stopped_by == "preempted":
            raise Preempted(signals.signum or signal.SIGTERM, self.step, self.total_steps, str(self.checkpoint_path))
        done = self.step - start_step
        spent_seconds = self.elapsed - start_elapsed
        return TrainSummary(
            steps=self.step,
            epochs_done=self.step / steps_per_epoch,
            seconds=self.elapsed,
            images_per_sec=(done * self.loader.batch_size * self.world_size / spent_seconds) if spent_seconds > 0 else 0.0,
            final_loss=last_loss if math.isfinite(last_loss) else float("nan"),
            stopped_by=stopped_by,
            peak_memory_mb=peak_memory_mb(self.device),
        )

    def _checkpoint_step(self) -> int:
        try:
            return int(load_checkpoint(self.checkpoint_path)["step"])
        except Exception:
            return -1
