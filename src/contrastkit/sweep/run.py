"""``contrastkit sweep`` and :func:`sweep`: check the plan, start or continue the study, run its
trials here or in ``jobs`` worker processes, then the end (launcher only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from contrastkit.errors import UserError
from contrastkit.sweep.plan import SPEC_FILE, Plan, make_plan, read_plan, write_plan
from contrastkit.sweep.report import finish
from contrastkit.sweep.study import Say, need_optuna, open_study, reap_killed, tally, work


def _print(line: str) -> None:
    print(line, flush=True)


def sweep(
    recipe: str | None = None,
    space: list[str] | dict[str, str] | None = None,
    *,
    out: str | Path,
    trials: int | None = None,
    budget_minutes: float | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    metric: str | None = None,
    validate_every: int | None = None,
    jobs: int = 1,
    storage: str | None = None,
    study: str | None = None,
    resume: bool = False,
    worker: bool = False,
    seed: int = 0,
    overrides: list[str] | None = None,
    final: bool = True,
    say: Say = _print,
) -> dict[str, Any]:
    """Search ``space`` (``["method.temperature=0.05:0.5:log", ...]`` or ``{"method.temperature":
    "0.05:0.5:log"}``) for the best configuration of ``recipe`` on the task's validation data, in
    ``trials`` trials (each a run folder ``out/trials/trial-NNNN``); then write ``out/best.yaml``,
    train and test it and the recipe's default once (unless ``final=False``), and write
    ``out/sweep.json`` and ``out/sweep.html``. Returns sweep.json's ``results`` (empty for a worker).

    ``resume=True`` continues the sweep in ``out`` (``trials`` may raise its count); ``worker=True``
    only runs trials of the sweep in ``out`` (what ``jobs`` > 1 starts)."""
    out = Path(out)
    need_optuna()  # installed?
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    if worker or resume:
        flag = "--worker" if worker else "--resume"
        given = [name for name, value in (("RECIPE", recipe), ("--space", space), ("--budget-minutes", budget_minutes),
                                          ("--metric", metric), ("--validate-every", validate_every),
                                          ("--study", study), ("--set", overrides)) if value]
        if given:
            raise UserError(f"{flag} continues the sweep in {str(out)!r} as {SPEC_FILE} says; drop {', '.join(given)}")
        plan, spec = read_plan(out, flag)
        if trials is not None and not worker:
            if trials < 1:
                raise UserError(f"--trials must be >= 1, got {trials}")
            plan.trials = trials
            write_plan(out, plan, {k: v for k, v in spec.items() if k == "results"})
        study_ = open_study(plan, out, create=False, storage=storage)
        if worker:
            work(study_, plan, out, say)
            return {}
        say(f"continuing the sweep in {out}: {tally(study_)[0]} of {plan.trials} trials counted")
    else:
        if recipe is None or trials is None:
            raise UserError("sweep needs RECIPE, --space KEY=SPEC ... and --trials N (or --resume / --worker)")
        plan = make_plan(recipe if not Path(recipe).is_file() else str(Path(recipe).resolve()), space or [],
                         trials=trials, sets=overrides, metric=metric, sampler=sampler, pruner=pruner,
                         budget_minutes=budget_minutes, validate_every=validate_every, seed=seed, storage=storage,
                         study=study or out.resolve().name)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"sweep folder {str(out)!r} already exists; continue it with --resume or choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        try:
            study_ = open_study(plan, out, create=True)
        except UserError:
            if not any(p.name != "study.db" for p in out.iterdir()):
                for p in out.iterdir():
                    p.unlink()
                out.rmdir()
            raise
        write_plan(out, plan)
        say(f"sweep of {plan.recipe} ({plan.task}): {plan.trials} trials chosen on {plan.metric} "
            f"({'higher' if plan.direction == 'max' else 'lower'} is better), sampler {plan.sampler}, "
            f"pruner {plan.pruner}" + (f", {plan.budget_minutes:g} min each" if plan.budget_minutes else "")
            + "".join(f", {s}" for s in plan.validation_sets)
            + f"; study {plan.study!r} in {plan.storage_url(out)}")
    if jobs > 1:
        _launch(study_, plan, out, jobs, storage, say)
    else:
        work(study_, plan, out, say)
    done, running = tally(study_)
    if done < plan.trials:
        raise UserError(f"the study has {done} of {plan.trials} counted trials ({running} running elsewhere); "
                        f"continue with: contrastkit sweep --out {out} --resume")
    spec = read_plan(out, "--resume")[1]
    return finish(study_, plan, out, spec, final=final, say=say)


def _launch(study: Any, plan: Plan, out: Path, jobs: int, storage: str | None, say: Say) -> None:
    """``jobs`` worker processes on the study (this one waits for them)."""
    reap_killed(study, say)
    cmd = [sys.executable, "-m", "contrastkit", "sweep", "--out", str(out), "--worker"]
    if storage:
        cmd += ["--storage", storage]
    say(f"starting {jobs} workers: {' '.join(cmd[1:])}")
    procs = [subprocess.Popen(cmd, env=os.environ.copy()) for _ in range(jobs)]
    codes = [p.wait() for p in procs]
    bad = [c for c in codes if c]
    if bad:
        say(f"{len(bad)} of {jobs} workers failed (exit {', '.join(map(str, bad))})")
