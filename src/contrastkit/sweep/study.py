"""The study of a sweep (Optuna, in SQLite in the sweep folder unless ``--storage`` names another
database) and the workers that run its trials.

A trial is an ordinary run folder, ``DIR/trials/trial-NNNN``, trained in this process with the
recipe, the user's overrides, the task's validation switched on and the drawn values; its figure
is results.json's ``validation.value``. The :class:`Pruning` callback reports each new point of the
run's validation curve to Optuna, whose pruner may stop the run. Which trials count towards
``--trials N``: complete, pruned and failed ones (not those killed with their process, nor a
surplus one). A worker stops asking once the counted and running trials reach N; after asking it
checks again by trial number, so that two workers never run more than N.

A trial records its host, process id and run folder. A trial left running by a process that is no
longer alive (a killed sweep) is told FAIL with reason "interrupted" and its values are queued
again; the new trial continues the killed one's run folder from its last checkpoint.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from contrastkit.errors import UserError
from contrastkit.runs import CHECKPOINTS, write_results
from contrastkit.sweep.plan import Plan
from contrastkit.training import Callback, Trainer
from contrastkit.training.callbacks import Validation
from contrastkit.training.preemption import Preempted

TRIALS = "trials"
INTERRUPTED, SURPLUS = "interrupted", "surplus"  # reasons of FAIL trials that do not count
STRAY_SECONDS = 120.0  # a running trial that never recorded its process, older than this, was lost

Say = Callable[[str], None]


def need_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UserError("contrastkit sweep needs Optuna: pip install 'contrastkit[sweep]'") from None

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_study(plan: Plan, out: Path, *, create: bool, storage: str | None = None) -> Any:
    """The plan's study (made with ``create``), with its sampler and pruner."""
    optuna = need_optuna()
    url = storage or plan.storage_url(out)
    if ":***@" in url:
        raise UserError(f"sweep.json hides the password of the study's database ({url}): pass --storage URL")
    kwargs = {"connect_args": {"timeout": 300}} if url.startswith("sqlite") else {}
    try:
        rdb = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as exc:  # a bad URL, a missing driver, no server
        raise UserError(f"--storage {url!r}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    direction = "maximize" if plan.direction == "max" else "minimize"
    common = {"storage": rdb, "study_name": plan.study, "sampler": _sampler(plan), "pruner": _pruner(plan)}
    if create:
        try:
            return optuna.create_study(direction=direction, **common)
        except optuna.exceptions.DuplicatedStudyError:
            raise UserError(f"study {plan.study!r} exists in {url}; continue it with --resume or choose another "
                            "--study") from None
    try:
        return optuna.load_study(**common)
    except KeyError:
        raise UserError(f"no study {plan.study!r} in {url}") from None


def _sampler(plan: Plan) -> Any:
    samplers = need_optuna().samplers
    if plan.sampler == "random":
        return samplers.RandomSampler(seed=plan.seed)
    if plan.sampler == "grid":
        return samplers.GridSampler({p.key: p.grid() for p in plan.params()}, seed=plan.seed)
    return samplers.TPESampler(seed=plan.seed)


def _pruner(plan: Plan) -> Any:
    pruners = need_optuna().pruners
    if plan.pruner == "median":
        return pruners.MedianPruner()
    if plan.pruner == "hyperband":
        return pruners.HyperbandPruner()
    return pruners.NopPruner()


# ----------------------------------------------------------------------------- counting


def _reason(t: Any) -> str | None:
    return t.user_attrs.get("reason")


def counts(t: Any) -> bool:
    """Whether a finished trial counts towards ``--trials``."""
    state = t.state.name
    return state in ("COMPLETE", "PRUNED") or (state == "FAIL" and _reason(t) not in (INTERRUPTED, SURPLUS))


def tally(study: Any) -> tuple[int, int]:
    """(counted trials, running trials)."""
    trials = study.get_trials(deepcopy=False)
    return sum(counts(t) for t in trials), sum(t.state.name == "RUNNING" for t in trials)


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux: /proc), telling a reused pid from the one recorded."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False  # killed, not yet waited for
    except (OSError, IndexError):
        pass
    now = _start_time(pid)
    return started is None or now is None or now == started


def reap_killed(study: Any, say: Say) -> int:
    """Tell FAIL ("interrupted") every running trial of this host whose process is gone, and queue
    its values again, to continue its run folder; returns how many. Two workers reaping at once:
    the one whose tell succeeds queues it."""
    optuna = need_optuna()
    host, now, reaped = socket.gethostname(), time.time(), 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        attrs = t.user_attrs
        if "pid" in attrs:
            if attrs.get("host") != host or _alive(int(attrs["pid"]), attrs.get("pid_started")):
                continue
        elif t.datetime_start is None or now - t.datetime_start.timestamp() < STRAY_SECONDS:
            continue
        trial = optuna.trial.Trial(study, t._trial_id)
        try:
            trial.set_user_attr("reason", INTERRUPTED)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # finished meanwhile, or reaped by another worker
        again: dict[str, Any] = {"resumed_from": t.number}
        if attrs.get("run_dir"):
            again["resume_dir"] = attrs["run_dir"]
        study.enqueue_trial(t.params, user_attrs=again)
        reaped += 1
        say(f"trial {t.number} was interrupted (process {attrs.get('pid', '?')} is gone): queued again to continue "
            f"{attrs.get('run_dir', 'from the start')}")
    return reaped


# ----------------------------------------------------------------------------- trials


class Pruning(Callback):
    """Reports each new point of the run's validation curve (the task's :class:`Validation`
    callback, which runs before this one) to the trial, and stops the run when the trial's
    pruner says so. A run resumed from a checkpoint reports its restored curve first."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.validation: Validation | None = None
        self.reported = 0
        self.pruned_at: int | None = None
        self.resumed_at: int | None = None

    def on_start(self, trainer: Trainer) -> None:
        self.validation = next((cb for cb in trainer.callbacks if isinstance(cb, Validation)), None)
        if trainer.step:
            self.resumed_at = trainer.step
        self._report(trainer)

    def on_step(self, trainer: Trainer, logs: dict[str, float] | None) -> None:
        self._report(trainer)

    def _report(self, trainer: Trainer) -> None:
        if self.validation is None or self.pruned_at is not None or len(self.validation.curve) <= self.reported:
            return
        for point in self.validation.curve[self.reported:]:
            value = float(point["value"])
            if math.isfinite(value):
                self.trial.report(value, int(point["step"]))
        self.reported = len(self.validation.curve)
        if self.trial.should_prune():
            self.pruned_at = trainer.step
            trainer.stop("pruned")


def one_line(exc: BaseException) -> str:
    """A failure as one line: a UserError's message, else ``ExcType: message``."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, UserError) else f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def describe_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in params.items())


def run_trial(study: Any, trial: Any, plan: Plan, out: Path, say: Say) -> str:
    """Train and validate one trial in this process and tell the study; returns its state name.
    Any exception fails the trial (one line, recorded as ``error``) and the sweep goes on; a
    signal (Preempted) marks it interrupted, queues it again and stops the worker."""
    from contrastkit.runner import train_run

    optuna = need_optuna()
    state = optuna.trial.TrialState
    params = dict(trial.params)
    resume_dir = trial.user_attrs.get("resume_dir")
    run_dir = Path(resume_dir) if resume_dir else Path(out) / TRIALS / f"trial-{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir))
    resume = bool(resume_dir) and any((run_dir / CHECKPOINTS / n).is_file() for n in ("last.pt", "previous.pt"))
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # a killed trial that never wrote a checkpoint: start it again
    run_dir.mkdir(parents=True, exist_ok=True)
    label = f"trial {trial.number}" + (f" (continues trial {trial.user_attrs['resumed_from']})"
                                       if "resumed_from" in trial.user_attrs else "")
    say(f"{label}: {describe_params(params)}")
    t0 = time.perf_counter()
    pruning = Pruning(trial)
    try:
        cfg = plan.trial_config(params)
        summary, extra = train_run(cfg, run_dir, resume=resume, progress=False, callbacks=[pruning], verbose=False)
        results: dict[str, Any] = {"run_dir": str(run_dir), "config": cfg.to_dict(), "train": asdict(summary), **extra,
                                   "sweep": {"study": plan.study, "trial": trial.number, "params": params}}
        write_results(run_dir, results)
        if pruning.resumed_at is not None:
            trial.set_user_attr("resumed_at_step", pruning.resumed_at)
        seconds = time.perf_counter() - t0
        if pruning.pruned_at is not None:
            study.tell(trial, state=state.PRUNED)
            last = pruning.validation.curve[-1]["value"] if pruning.validation and pruning.validation.curve else None
            say(f"{label}: pruned at step {pruning.pruned_at} ({plan.metric} {_fmt(last)}) after {seconds:.0f} s")
            return "PRUNED"
        value = (extra.get("validation") or {}).get("value")
        if value is None or not math.isfinite(float(value)):
            raise UserError(f"the run recorded no {plan.metric} (results.json validation.value is {value})")
        study.tell(trial, float(value))
        say(f"{label}: {plan.metric} {float(value):.4g} in {seconds:.0f} s")
        return "COMPLETE"
    except Preempted:
        trial.set_user_attr("reason", INTERRUPTED)
        study.tell(trial, state=state.FAIL)
        study.enqueue_trial(params, user_attrs={"resumed_from": trial.number, "resume_dir": str(run_dir)})
        raise
    except Exception as exc:
        reason = one_line(exc)
        trial.set_user_attr("error", reason)
        study.tell(trial, state=state.FAIL)
        say(f"{label}: failed: {reason}")
        return "FAIL"


def work(study: Any, plan: Plan, out: Path, say: Say) -> int:
    """Run trials until the study has ``plan.trials`` counted ones (or as many running
    elsewhere); returns how many this worker ran."""
    optuna = need_optuna()
    reap_killed(study, say)
    distributions = plan.distributions()
    ran = 0
    while True:
        done, running = tally(study)
        if done + running >= plan.trials:
            return ran
        trial = study.ask(distributions)
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("pid_started", _start_time(os.getpid()))
        # asked at the same moment as another worker? the lower numbers run, the rest are surplus
        ahead = [t.number for t in study.get_trials(deepcopy=False) if counts(t) or t.state.name == "RUNNING"]
        if sum(n < trial.number for n in ahead) >= plan.trials:
            trial.set_user_attr("reason", SURPLUS)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return ran
        prefix = f"[{min(done + 1, plan.trials)}/{plan.trials}]"

        def progress(line: str, prefix: str = prefix) -> None:
            say(f"{prefix} {line}")

        run_trial(study, trial, plan, out, progress)
        ran += 1
