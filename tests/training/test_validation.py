"""The one validation callback (``Validation``): evaluated exactly on the multiples of ``every``,
in the loggers and its curve, the best value kept, the random state of training untouched, and
``finish`` measuring at the final step of a run stopped early (as by a time budget)."""

from __future__ import annotations

import csv
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
