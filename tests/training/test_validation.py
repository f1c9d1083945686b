"""The one validation callback (``Validation``): evaluated exactly on the multiples of ``every``,
in the loggers and its curve, the best value kept, the random state of training untouched, and
``finish`` measuring at the final step of a run stopped early (as by a time budget)."""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

import torch

from contrastkit.recipes import load_config
from contrastkit.runner import train_run
from contrastkit.runs import new_run_dir
from contrastkit.training import Callback, Trainer
from contrastkit.training.callbacks import Validation

from ..conftest import tiny_overrides


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, trainer: Trainer, logs: dict[str, float] | None) -> None:
        if trainer.step == self.step:
            trainer.stop("time_budget")


class RandomState(Callback):
    """Placed before and after the validation: the global random state is the same around it."""

    def __init__(self, before: RandomState | None = None) -> None:
        self.before, self.state, self.checked = before, torch.empty(0), 0

    def on_step(self, trainer: Trainer, logs: dict[str, float] | None) -> None:
        self.state = torch.get_rng_state()
        if self.before is not None:
            assert torch.equal(self.state, self.before.state), trainer.step
            self.checked += 1


def test_validation_every_n_steps_keeps_the_best_and_finishes_a_stopped_run(tmp_path: Path) -> None:
    cfg = load_config("digits-simclr", tiny_overrides(**{"train.max_steps": 6, "eval.enabled": False}))
    values = iter([0.5, 0.3, 0.4])
    kept: list[tuple[int, float]] = []

    def evaluate() -> float:
        torch.rand(100)  # a draw from the global generator: undone
        return next(values)

    val = Validation(evaluate, metric="val_x", every=2, direction="min", keep=lambda s, v: kept.append((s, v)))
    run = new_run_dir(cfg, str(tmp_path / "val"), resume=False)
    before = RandomState()
    after = RandomState(before)
    summary, _ = train_run(cfg, run, progress=False, verbose=False, callbacks=[before, val, after, StopAt(5)])
    assert summary.steps == 5 and summary.stopped_by == "time_budget"
    assert after.checked == 5
    assert [p["step"] for p in val.curve] == [2, 4]  # the multiples of 2 only: step 5 is not the last
    rows = {int(r["step"]): float(r["val_x"]) for r in csv.DictReader((run / "train_log.csv").open()) if r["val_x"]}
    assert rows == {2: 0.5, 4: 0.3}
    val.finish(5)
    val.finish(5)  # the curve ends there already: no second measurement
    res = val.results()
    assert [(p["step"], p["value"]) for p in res["curve"]] == [(2, 0.5), (4, 0.3), (5, 0.4)]
    assert (res["best"], res["best_step"], res["final"]["step"], res["direction"]) == (0.3, 4, 5, "min")
    assert kept == [(2, 0.5), (4, 0.3)]  # lower is better: each new best kept, the worse ones not


class Loop:
    """The part of the trainer a Validation uses, stepped by hand (no model: validation ``i``,
    at step ``(i + 1) * every``, measures ``values[i]``)."""

    def __init__(self, values: list[float], every: int) -> None:
        self.values, self.every = values, every
        self.step, self.total_steps, self.stop_reason = 0, len(values) * every, None
        self.is_main, self.world_size, self.device = True, 1, torch.device("cpu")

    def value(self) -> float:
        return self.values[self.step // self.every - 1]

    def validation(self, patience: int, min_step: int) -> Validation:
        return Validation(self.value, metric="val_x", every=self.every, direction="max", patience=patience,
                          min_step=min_step)

    def log_metrics(self, values: dict[str, float]) -> None:
        pass

    def request_checkpoint(self) -> None:
        pass

    def stop(self, reason: str) -> None:
        self.stop_reason = reason

    def run(self, val: Validation, until: int | None = None) -> int | None:
        """Steps until the validation stops the run (its step) or ``until`` / the last step (None)."""
        val.on_start(self)  # type: ignore[arg-type]
        while self.stop_reason is None and self.step < (self.total_steps if until is None else until):
            self.step += 1
            val.on_step(self, None)  # type: ignore[arg-type]
        return self.step if self.stop_reason == "early_stopping" else None


def naive_stop(values: list[float], every: int, patience: int, min_step: int) -> int | None:
    """The first validation step from ``min_step`` on whose last ``patience`` values all stay at or
    below the best before them (NaN never better)."""
    for i in range(patience - 1, len(values)):
        step = (i + 1) * every
        before = [v for v in values[: i - patience + 1] if math.isfinite(v)]
        if step >= min_step and not any(v > max(before, default=-math.inf) for v in values[i - patience + 1 : i + 1]):
            return step
    return None


def test_patience_stops_after_that_many_validations_without_a_new_best_from_min_step_on() -> None:
    """Against a naive count on random sequences (ties and NaNs among them); cut anywhere and
    continued from its state_dict, the same stop; a stopped Validation's state stops a new run at
    once."""
    rng = random.Random(0)
    stops = set()
    for case in range(300):
        every, patience = rng.randint(1, 3), rng.randint(1, 4)
        values = [float("nan") if rng.random() < 0.1 else float(rng.randint(0, 5)) for _ in range(rng.randint(1, 12))]
        min_step = rng.randint(0, len(values) * every)
        expected = naive_stop(values, every, patience, min_step)
        loop = Loop(values, every)
        assert loop.run(loop.validation(patience, min_step)) == expected, (case, values, every, patience, min_step)
        stops.add(expected is None)
        loop = Loop(values, every)
        cut = rng.randint(0, loop.total_steps)
        first = loop.validation(patience, min_step)
        stopped = loop.run(first, until=cut)
        second = loop.validation(patience, min_step)
        second.load_state_dict(first.state_dict())
        loop.stop_reason = None
        resumed = loop.run(second)
        assert (stopped or resumed) == expected, (case, cut)
        if stopped is not None:  # resumed after the stop: stops before any step
            assert resumed == stopped and [p["step"] for p in second.curve] == [p["step"] for p in first.curve]
        assert second.results()["stopped_early"] == (expected is not None)
    assert stops == {True, False}  # both outcomes were tried
