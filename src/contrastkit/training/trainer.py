"""The one training loop. Every task trains through it: a task hands it a :class:`Training`
(a step, the batches it runs on, callbacks and the unit of its throughput) and the loop owns the
rest: the step count, epochs and the time budget; the learning-rate schedule's clock; SIGTERM /
SIGUSR1 / SIGINT → checkpoint → exit 75; loggers; the check for a non-finite loss; progress;
periodic and final checkpoints of every stateful part (the step's model and optimisers, the
batches' random streams, the callbacks, the RNG) in one atomic file; exact resume.

The loop never waits for the device on a step that does not log: a step's loss and logs stay
tensors; they are turned into numbers, the loss checked and the diagnostics computed only on a
logged step (``train.log_every``), and before a checkpoint is written.
"""

from __future__ import annotations

import math
import re
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from contrastkit.negatives.distributed import world
from contrastkit.training.checkpoint import (
    CheckpointWriteError,
    atomic_save,
    load_checkpoint,
    load_latest_checkpoint,
)
from contrastkit.training.loggers import Loggers, check_installed
from contrastkit.training.optim import lr_factor
from contrastkit.training.options import OptimConfig, TrainConfig
from contrastkit.training.preemption import (
    DistributedFailure,
    Preempted,
    PreemptionHandler,
    is_communication_failure,
)
from contrastkit.training.progress import Progress
from contrastkit.training.runtime import peak_memory_mb

CHECKPOINT_FORMAT = "contrastkit-checkpoint-v2"
LEGACY_STEP_KEYS = ("model", "optimizer", "scaler")  # v1 checkpoints kept the step's state at the top


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------- what a task supplies


@dataclass(frozen=True)
class Clock:
    """Where training stands when a step runs: what a step's schedules need."""

    step: int  # steps done before this one
    total: int  # steps planned
    schedule_total: int  # the total as schedules should see it (under a time budget: the expected steps)
    lr_factor: float  # of the peak learning rate: warm-up and decay (optim.schedule)


class StepResult(Protocol):
    """What a step returns (a method's ``StepOutput``): the loss, logs as tensors or numbers,
    and optionally diagnostics computed only on logged steps."""

    @property
    def loss(self) -> Tensor | None: ...  # None: the step has no loss to report (yet)

    @property
    def logs(self) -> dict[str, Any]: ...

    @property
    def diagnostics(self) -> Callable[[], dict[str, float]] | None: ...


class Step(Protocol):
    """One update of a task's model(s) from one batch, and its state for checkpoints."""

    def __call__(self, batch: Any, clock: Clock, /) -> StepResult: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Batches(Protocol):
    """Where a step's batches come from: ``len()`` steps per epoch, ``batches(epoch, start)``
    (deterministic in the epoch, from the ``start``-th batch on), how many units a batch holds,
    and the state of its random streams."""

    def __len__(self) -> int: ...

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]: ...

    def units(self, batch: Any) -> int: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Callback:
    """Called after every step; ``logs`` (numbers) only on logged steps, else None. Its state is
    saved in the run's checkpoint with everything else, so a resumed run continues it."""

    def on_start(self, trainer: Trainer) -> None:
        """Once before the first step of this process (after a resume: the restored state)."""

    def on_step(self, trainer: Trainer, logs: dict[str, float] | None) -> None:
        """After step ``trainer.step``; may call ``trainer.stop(reason)`` or ``trainer.request_checkpoint()``."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


@dataclass
class Training:
    """A task's training, as the loop runs it."""

    step: Step
    batches: Batches
    unit: str = "samples"  # what the throughput counts: images, texts, tokens, env steps, ...
    callbacks: list[Callback] = field(default_factory=list)
    epochs: bool = True  # whether epochs mean something (False: one epoch is the whole run)


@dataclass
class TrainSummary:
    """What a finished (or stopped) training run did."""

    steps: int
    epochs_done: float
    seconds: float
    throughput: float  # units per second
    unit: str
    final_loss: float
    stopped_by: str
    peak_memory_mb: float = 0.0
    collapsed_at_step: int | None = None


# ----------------------------------------------------------------------------- the loop


class Trainer:
    """Run a :class:`Training` for the steps (or minutes) of ``train``, logging into and
    checkpointing to ``run_dir``. ``optim`` gives the learning-rate schedule's shape (a step
    that has no schedule ignores :attr:`Clock.lr_factor`); ``config`` is stored in every
    checkpoint and given to the loggers."""

    def __init__(
        self,
        training: Training,
        run_dir: Path,
        train: TrainConfig,
        *,
        device: torch.device,
        optim: OptimConfig | None = None,
        config: dict[str, Any] | None = None,
        progress: bool = True,
    ) -> None:
        check_installed(train.loggers)
        self.training = training
        self.step_fn, self.loader, self.callbacks = training.step, training.batches, list(training.callbacks)
        self.run_dir = Path(run_dir)
        self.cfg, self.optim = train, optim or OptimConfig()
        self.config = config or {}
        self.device = device
        self.show_progress = progress and train.progress
        self.rank, self.world_size = world()
        self.is_main = self.rank == 0
        self.step = self.epoch = self.batch_in_epoch = 0
        self.elapsed = 0.0
        self.steps_per_epoch = len(self.loader)
        epochs = train.epochs if training.epochs else 1  # without epochs, one pass over the batches is the run
        self.total_steps = train.max_steps or epochs * self.steps_per_epoch
        self.checkpoint_path = self.run_dir / "checkpoints" / "last.pt"
        self.stop_reason: str | None = None
        self._checkpoint_now = False
        self._pending: list[Tensor] = []  # losses since the last check for non-finite values
        self._saved_at = -1  # the step of the last checkpoint written
        self.units_done = 0  # units trained on by this process's steps (all ranks)
        self._last: StepResult | None = None
        self._open_loggers: Loggers | None = None  # while fit() runs

    # -------------------------------------------------------------------- what callbacks use

    def stop(self, reason: str) -> None:
        """End training after this step (e.g. ``early_stopping``); a final checkpoint is written."""
        self.stop_reason = reason

    def request_checkpoint(self) -> None:
        """Write a checkpoint after this step's callbacks (e.g. after a validation)."""
        self._checkpoint_now = True

    def log_metrics(self, values: dict[str, float]) -> None:
        """Log numbers a callback computed at this step (a validation) to the run's loggers; in
        train_log.csv they make a row of their own."""
        if self._open_loggers is not None:
            self._open_loggers.log_metrics(self.step, values)

    def last_loss(self) -> float:
        """The loss of the last step as a number (its ``loss`` log where the step reports one,
        e.g. per pair; waits for the device)."""
        if self._last is None:
            return float("nan")
        value = self._last.logs.get("loss", self._last.loss)
        if value is None:
            return float("nan")
        return float(value.detach()) if isinstance(value, Tensor) else float(value)

    # -------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "elapsed": self.elapsed,
            "total_steps": self.total_steps,
            "state": self.step_fn.state_dict(),
            "loader": self.loader.state_dict(),
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            "torch_rng": torch.get_rng_state(),
            "config": self.config,
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def save_checkpoint(self) -> None:
        """Atomic checkpoint by rank 0 (the one before it kept as previous.pt) after checking that
        no loss since the last check was NaN; under DDP every rank's loader and RNG state go into
        it, and every rank learns whether it was written."""
        self._check_finite()
        state = self.state_dict()
        if self.world_size > 1:
            import torch.distributed as dist

            per_rank: list[Any] = [None] * self.world_size
            dist.all_gather_object(per_rank, {"loader": state["loader"], "torch_rng": state["torch_rng"]})
            state["ranks"] = per_rank
            state["world_size"] = self.world_size
        failure: CheckpointWriteError | None = None
        self._saved_at = self.step
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
        previous.pt with a warning). A checkpoint of an older contrastkit (v1) resumes too."""
        if path is None:
            state, _ = load_latest_checkpoint(self.checkpoint_path.parent, map_location=self.device)
        else:
            state = load_checkpoint(path, map_location=self.device)
        step_state = state.get("state") or {k: state[k] for k in LEGACY_STEP_KEYS if k in state}
        self.step_fn.load_state_dict(step_state)
        for callback, saved in zip(self.callbacks, state.get("callbacks") or [], strict=False):
            callback.load_state_dict(saved)
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

    # -------------------------------------------------------------------- schedule and budget

    def _progress(self) -> float:
        frac = self.step / max(self.total_steps, 1)
        if self.cfg.time_budget_minutes:
            frac = max(frac, self.elapsed / (60.0 * self.cfg.time_budget_minutes))
        return frac

    def _clock(self) -> Clock:
        o = self.optim
        factor = lr_factor(self._progress(), o.warmup_fraction, o.schedule, o.final_lr_fraction)
        return Clock(self.step, self.total_steps, self._schedule_total(), factor)

    def _schedule_total(self) -> int:
        """Total steps as methods' schedules (e.g. EMA momentum) should see them: under a time
        budget, the steps the budget is expected to allow at the speed so far."""
        budget = self.cfg.time_budget_minutes
        if not budget or self.elapsed <= 0 or self.step == 0:
            return self.total_steps
        expected = int(self.step * 60.0 * budget / self.elapsed)
        return max(self.step + 1, min(self.total_steps, expected))

    def _budget_spent(self) -> bool:
        budget = self.cfg.time_budget_minutes
        return bool(budget) and self.elapsed >= 60.0 * budget  # type: ignore[operator]

    # -------------------------------------------------------------------- non-finite losses

    def _watch(self, loss: Tensor | None) -> None:
        """Keep the step's loss (a tensor: nothing waits for the device) for the next check."""
        if loss is not None:
            self._pending.append(loss.detach())

    def _check_finite(self) -> None:
        """Raise :class:`TrainingDiverged` if a loss since the last check was not finite."""
        if not self._pending:
            return
        losses = torch.stack([loss.float().reshape(()) for loss in self._pending])
        first_step = self.step - len(self._pending) + 1
        self._pending = []
        bad = torch.nonzero(~torch.isfinite(losses)).flatten().tolist()
        if not bad:
            return
        kept = (
            f"the last good checkpoint (step {self._checkpoint_step()}) is kept in {self.checkpoint_path}"
            if self.checkpoint_path.exists()
            else "no checkpoint had been written yet"
        )
        raise TrainingDiverged(
            f"loss became {float(losses[bad[0]])} at step {first_step + bad[0]}; {kept}. "
            "Lower optim.lr, raise method.temperature or set optim.grad_clip."
        )

    def _checkpoint_step(self) -> int:
        try:
            return int(load_checkpoint(self.checkpoint_path)["step"])
        except Exception:
            return -1

    # -------------------------------------------------------------------- logs

    def _loggers(self) -> Loggers:
        """The configured loggers (rank 0 only), continuing from the current step (after a
        resume, the CSV rows and TensorBoard events past the checkpoint are dropped)."""
        if not self.is_main:
            return Loggers([])
        return Loggers.open(self.cfg.loggers, self.run_dir, start_step=self.step, config=self.config)

    def _logs(self, out: StepResult) -> dict[str, float]:
        """A logged step's logs as numbers, with the diagnostics (the device is waited for here)."""
        self._check_finite()
        logs: dict[str, Any] = {} if out.loss is None else {"loss": out.loss}
        logs.update(out.logs)
        values = {k: float(v.detach()) if isinstance(v, Tensor) else float(v) for k, v in logs.items()}
        if out.diagnostics is not None:
            values.update(out.diagnostics())
        return values

    # -------------------------------------------------------------------- the loop

    def fit(self) -> TrainSummary:
        """Run until the step count (or time budget) is reached; checkpoint along the way.

        SIGTERM / SIGUSR1 / SIGINT end the run after the current step with a checkpoint of it
        (:class:`~contrastkit.training.preemption.Preempted` is raised once it is written); a
        failed collective under torchrun raises :class:`DistributedFailure`.
        """
        try:
            with PreemptionHandler(verbose=self.is_main) as signals:
                return self._fit(signals)
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

    def _stop_requested(self, signals: PreemptionHandler, agree: bool) -> tuple[bool, bool]:
        """(a signal arrived, the budget is spent). One process decides at every step; under
        torchrun the processes agree (one all-reduce) on ``agree`` steps only, so that every
        other step runs without waiting."""
        if self.world_size == 1:
            return signals.signum is not None, self._budget_spent()
        if not agree:
            return False, False
        return signals.stop_requested(self.world_size, self.device, self._budget_spent())

    def _fit(self, signals: PreemptionHandler) -> TrainSummary:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        unit, log_every = self.training.unit, self.cfg.log_every
        start_step, start_elapsed = self.step, self.elapsed
        window_units, window_time, rate = 0, 0.0, 0.0
        for callback in self.callbacks:
            callback.on_start(self)
        stopped_by = self.stop_reason or "steps"  # a callback may have ended the run already
        progress = Progress(self.total_steps, initial=self.step, unit=unit, enabled=self.show_progress and self.is_main)
        with self._loggers() as loggers:
            self._open_loggers = loggers
            # wall-clock of the whole loop: batch assembly and augmentation, step, logs, checkpoints
            t0 = time.perf_counter()
            while self.step < self.total_steps and stopped_by == "steps":
                for batch in self.loader.batches(self.epoch, self.batch_in_epoch):
                    out = self.step_fn(batch, self._clock())
                    self._watch(out.loss)
                    self._last = out
                    now = time.perf_counter()
                    dt, t0 = now - t0, now
                    self.elapsed += dt
                    self.step += 1
                    self.batch_in_epoch += 1
                    units = self.loader.units(batch) * self.world_size
                    window_units += units
                    self.units_done += units
                    window_time += dt
                    logged = self.step % log_every == 0 or self.step == self.total_steps
                    logs: dict[str, float] | None = None
                    if logged:
                        logs = self._logs(out)
                        rate = window_units / max(window_time, 1e-9)
                        window_units, window_time = 0, 0.0
                        row = {f"{unit.replace(' ', '_')}_per_sec": rate, "elapsed_sec": self.elapsed, **logs}
                        if self.training.epochs:
                            row["epoch"] = self.step / self.steps_per_epoch
                        loggers.log_metrics(self.step, row)
                        progress.set(loss=logs.get("loss"), lr=logs.get("lr"), rate=rate)
                    progress.update(1)
                    for callback in self.callbacks:
                        callback.on_step(self, logs)
                    if self.stop_reason is not None:
                        stopped_by = self.stop_reason
                        break
                    if self.step % self.cfg.checkpoint_every == 0 or self._checkpoint_now:
                        self._checkpoint_now = False
                        self.save_checkpoint()
                    agree = logged or self.step % self.cfg.checkpoint_every == 0
                    signalled, spent = self._stop_requested(signals, agree)
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
                if self.batch_in_epoch >= self.steps_per_epoch:
                    self.epoch += 1
                    self.batch_in_epoch = 0
            # each step's time runs to the end of the next one's; the last step's callbacks (a final
            # validation, say) and checkpoint are counted here
            self.elapsed += time.perf_counter() - t0
            progress.close()
            if self._saved_at != self.step:  # the last step's checkpoint, unless it has one already
                self.save_checkpoint()
            self._open_loggers = None
        if stopped_by == "preempted":
            raise Preempted(signals.signum or signal.SIGTERM, self.step, self.total_steps, str(self.checkpoint_path))
        done, spent_seconds = self.step - start_step, self.elapsed - start_elapsed
        final = self.last_loss()
        return TrainSummary(
            steps=self.step,
            epochs_done=self.step / self.steps_per_epoch if self.training.epochs else 0.0,
            seconds=self.elapsed,
            throughput=self.units_done / spent_seconds if spent_seconds > 0 and done else 0.0,
            unit=unit,
            final_loss=final if math.isfinite(final) else float("nan"),
            stopped_by=stopped_by,
            peak_memory_mb=peak_memory_mb(self.device),
        )
