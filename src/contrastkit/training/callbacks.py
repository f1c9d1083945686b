"""Callbacks the loop offers every task (a task adds its own: early stopping, evaluation rounds)."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from contrastkit.errors import check_choice
from contrastkit.training.trainer import Callback, Trainer

DIRECTIONS = ("max", "min")


class CollapseMonitor(Callback):
    """Warns once when the logged embeddings collapse.

    Collapse means ``emb_std`` below ``min_std`` (all rows near one point) or ``eff_rank``
    below ``min_rank`` (all rows on a line), seen for ``patience`` logged steps in a row (the
    diagnostics exist on logged steps only). ``collapsed_at`` is the step it was first seen.
    """

    def __init__(self, min_std: float = 0.05, min_rank: float = 1.5, patience: int = 3) -> None:
        self.min_std, self.min_rank, self.patience = min_std, min_rank, patience
        self.bad = 0
        self.warned = False
        self.collapsed_at: int | None = None

    def on_step(self, trainer: Trainer, logs: dict[str, float] | None) -> None:
        if self.warned or not logs or "emb_std" not in logs:
            return
        std, rank = logs["emb_std"], logs.get("eff_rank", float("inf"))
        if std < self.min_std or rank < self.min_rank:
            self.bad += 1
        else:
            self.bad = 0
        if self.bad >= self.patience:
            self.warned = True
            self.collapsed_at = trainer.step
            warnings.warn(
                f"representation collapse at step {trainer.step}: embedding std {std:.3f} (healthy ~1), "
                f"effective rank {rank:.2f}; try a lower optim.lr, another method.temperature, "
                "or a larger predictor/momentum",
                RuntimeWarning,
                stacklevel=2,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"bad": self.bad, "warned": self.warned, "collapsed_at": self.collapsed_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bad, self.warned = int(state["bad"]), bool(state["warned"])
        self.collapsed_at = None if state["collapsed_at"] is None else int(state["collapsed_at"])


class Validation(Callback):
    """Evaluates the model on a validation set during training: the one mechanism for it (the
    text task's dev set, the image task's kNN accuracy on its validation split, a sweep's
    intermediate values).

    ``evaluate()`` (the current model's ``metric``, a number; or a mapping with the number under
    ``"value"`` and other figures of the same measurement, e.g. the spread of episode returns,
    which join its curve point) runs after every ``every``-th step
    (exactly on the multiples of ``every``; None or 0: never) and after the last step — on no
    other step — in the first process only, with the random state of training left as it was
    (its time counts in the run's elapsed time). The value goes to the run's loggers (a row of its
    own in train_log.csv) and to ``note`` (a line, optional). When it beats the best so far
    (``direction``: "max" or "min"; a NaN never does), ``keep(step, value)`` (optional) saves the
    model; with a ``keep``, a checkpoint is requested after each evaluation, so that a resumed run
    neither repeats nor loses one and its best weights match its best step. The curve, the best
    value and its step are the callback's state, saved with the checkpoint. :meth:`finish`
    measures at a run's final step when the run stopped before its last (a time budget).

    ``patience`` (optional): stop training (``trainer.stop("early_stopping")``) after that many
    evaluations in a row without a new best, not before step ``min_step``. The run's validation
    figure (``results()["value"]``) is the best value where the best weights are kept, else the
    last one.
    """

    def __init__(
        self, evaluate: Callable[[], float | Mapping[str, float]], *, metric: str, every: int | None = None,
        direction: str = "max",
        keep: Callable[[int, float], None] | None = None, describe: dict[str, Any] | None = None,
        note: Callable[[str], None] | None = None, patience: int | None = None, min_step: int = 0,
    ) -> None:
        check_choice("validation direction", direction, DIRECTIONS)
        self.patience, self.min_step = patience, min_step
        self.bad = 0  # evaluations in a row without a new best
        self.stopped = False
        self.evaluate, self.keep, self.note = evaluate, keep, note
        self.metric, self.every, self.direction = metric, every, direction
        self.describe = describe or {}
        self.curve: list[dict[str, float]] = []  # {step, value, seconds} per evaluation
        self.best: float | None = None
        self.best_step: int | None = None
        self.seconds = 0.0
        self.active = True  # whether this process evaluates (the first one only; set on start)
        self.devices: list[torch.device] = []  # whose random state evaluate() must leave alone

    def due(self, step: int, total: int) -> bool:
        """Whether ``step`` is a validation step."""
        return step >= total or (self.every is not None and self.every > 0 and step % self.every == 0)

    def better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return self.best is None or (value > self.best if self.direction == "max" else value < self.best)

    def measure(self, step: int) -> float:
        """Evaluate now, as step ``step``: the value joins the curve (and is kept if the best)."""
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=self.devices):
            out = self.evaluate()
        extra = {k: float(v) for k, v in out.items() if k != "value"} if isinstance(out, Mapping) else {}
        value = float(out["value"]) if isinstance(out, Mapping) else float(out)
        seconds = time.perf_counter() - t0
        self.seconds += seconds
        self.curve.append({"step": step, "value": value, **extra, "seconds": seconds})
        if self.better(value):
            self.best, self.best_step = value, step
            self.bad = 0
            if self.keep is not None:
                self.keep(step, value)
        else:
            self.bad += 1
        if self.note is not None:
            self.note(f"step {step}: {self.metric} {value:.4f} (best {self.best:.4f} at step {self.best_step})"
                      if self.best is not None else f"step {step}: {self.metric} {value}")
        return value

    def on_start(self, trainer: Trainer) -> None:
        self.active = trainer.is_main
        self.devices = [trainer.device] if trainer.device.type == "cuda" else []
        if self.stopped:  # resumed after early stopping: nothing more to train
            trainer.stop("early_stopping")

    def on_step(self, trainer: Trainer, logs: dict[str, float] | None) -> None:
        if not self.due(trainer.step, trainer.total_steps):
            return
        if self.active:
            trainer.log_metrics({self.metric: self.measure(trainer.step)})
        if self.patience is not None:
            self.stopped = self._patience_spent(trainer)
            if self.stopped:
                trainer.stop("early_stopping")
        if self.keep is not None or self.patience is not None:
            trainer.request_checkpoint()  # every process: the checkpoint is collective under torchrun

    def _patience_spent(self, trainer: Trainer) -> bool:
        """Whether patience is spent; under torchrun every process follows the first one's count."""
        assert self.patience is not None
        spent = self.bad >= self.patience and trainer.step >= self.min_step
        if trainer.world_size > 1:
            flag = torch.tensor([float(spent)], device=trainer.device)
            torch.distributed.broadcast(flag, src=0)
            spent = bool(flag.item())
        return spent

    def finish(self, step: int) -> None:
        """Measure at ``step``, the run's final one, unless the curve ends there already (a run
        stopped by its time budget or a callback between two validation steps). In the first
        process, after training (the value is in results.json, not in the loggers)."""
        if self.active and (not self.curve or int(self.curve[-1]["step"]) != step):
            self.measure(step)

    def state_dict(self) -> dict[str, Any]:
        return {"curve": [dict(p) for p in self.curve], "best": self.best, "best_step": self.best_step,
                "seconds": self.seconds, "bad": self.bad, "stopped": self.stopped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curve = [dict(p) for p in state["curve"]]
        self.best = None if state["best"] is None else float(state["best"])
        self.best_step = None if state["best_step"] is None else int(state["best_step"])
        self.seconds = float(state["seconds"])
        self.bad, self.stopped = int(state.get("bad", 0)), bool(state.get("stopped", False))

    @property
    def value(self) -> float | None:
        """The run's validation figure: the best value where the best weights are kept (they
        become the run's model), else the last one."""
        if self.keep is not None:
            return self.best
        return float(self.curve[-1]["value"]) if self.curve else None

    def results(self) -> dict[str, Any]:
        """What results.json's ``validation`` records (the same shape for every task): the metric,
        its direction, what was measured how (``describe``), the curve, its best and final points,
        the run's figure (``value``), the time, and whether patience stopped the run."""
        return {
            "metric": self.metric,
            "direction": self.direction,
            **self.describe,
            "every": self.every,
            "curve": [dict(p) for p in self.curve],
            "best": self.best,
            "best_step": self.best_step,
            "final": dict(self.curve[-1]) if self.curve else None,
            "value": self.value,
            "kept_best": self.keep is not None,
            "evaluations": len(self.curve),
            "seconds": self.seconds,
            "stopped_early": self.stopped,
        }
