"""The life cycle every run goes through, the same for every task: train (the task's
:class:`~contrastkit.training.Training` through the one loop), then evaluate (rank 0 alone), then
results.json and report.html. The steps themselves belong to the task; this module only drives
them, and opens finished runs (:func:`load_run`).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from contrastkit.config import Config
from contrastkit.errors import UserError
from contrastkit.negatives.distributed import world
from contrastkit.recipes import apply_overrides, read_run_config
from contrastkit.runs import save_run_config, write_results
from contrastkit.tasks import RunContext, TrainedRun, get_task
from contrastkit.training import Callback, Trainer, TrainSummary, setup_runtime
from contrastkit.training.distributed import shutdown


def load_run(run_dir: str | Path, overrides: list[str] | dict[str, Any] | None = None) -> TrainedRun:
    """A run folder opened for use by its task (``overrides``: e.g. other ``eval.*`` values or
    ``train.device``); nothing is loaded until needed."""
    cfg = apply_overrides(read_run_config(Path(run_dir)), overrides)
    return open_run(cfg, run_dir)


def open_run(cfg: Config, run_dir: str | Path) -> TrainedRun:
    """The run in ``run_dir`` with the config ``cfg``, opened by its task."""
    return get_task(cfg.task)(cfg).load(Path(run_dir))


def train_run(
    cfg: Config,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: list[Callback] | None = None,
    verbose: bool = True,
) -> tuple[TrainSummary, dict[str, Any]]:
    """Train the configured task and method; returns the summary and the task's extra results.
    Checkpoints, logs and the trained artifacts go to ``run_dir``; ``callbacks`` run after
    the task's own."""
    task = get_task(cfg.task)(cfg)
    device = setup_runtime(cfg.train)
    rank, world_size = world()
    if cfg.train.batch_size % world_size:
        raise UserError(
            f"train.batch_size {cfg.train.batch_size} (the global batch) is not divisible by the "
            f"{world_size} processes; choose a multiple of {world_size}"
        )
    ctx = RunContext(cfg, Path(run_dir), device, rank, world_size, resume, verbose and rank == 0)
    if not resume and ctx.is_main:
        save_run_config(cfg, ctx.run_dir)
    training = task.training(ctx)
    training.callbacks += callbacks or []
    trainer = Trainer(training, ctx.run_dir, cfg.train, device=device, optim=cfg.optim, config=cfg.to_dict(),
                      progress=progress)
    if resume:
        trainer.load_checkpoint()
        ctx.log(f"resumed {run_dir} at step {trainer.step}/{trainer.total_steps}")
    ctx.log(f"{task.describe(ctx)}: {trainer.total_steps} steps")
    if world_size > 1:
        ctx.log(f"distributed: {world_size} processes, {ctx.local_batch} per process and step")
    summary = trainer.fit()
    extra = task.after_training(ctx, summary)
    return summary, extra


def evaluate(run: TrainedRun, *, verbose: bool = True, report: bool | None = None) -> dict[str, Any]:
    """Evaluate a finished or interrupted run; results.json's ``eval`` is replaced with it, and
    with ``report`` (default: the run's ``eval.report``) the run's report.html too."""
    out = run.evaluate(verbose=verbose)
    results = run.results
    results["eval"] = out
    write_results(run.path, results)
    if run.config.eval.report if report is None else report:
        from contrastkit.report import refresh_run_report

        refresh_run_report(run.path, results, verbose=verbose)
    return out


def run_all(
    cfg: Config, run_dir: Path, *, resume: bool = False, progress: bool = True, verbose: bool = True
) -> dict[str, Any]:
    """Train, then (rank 0 alone under torchrun) evaluate; results.json holds both. The other
    ranks return {} once training is over."""
    t0 = time.perf_counter()
    summary, extra = train_run(cfg, run_dir, resume=resume, progress=progress, verbose=verbose)
    rank, world_size = world()
    if world_size > 1:  # training is over: evaluation runs in rank 0 alone
        shutdown()
        if rank != 0:
            return {}
    results: dict[str, Any] = {"run_dir": str(run_dir), "config": cfg.to_dict(), "train": asdict(summary), **extra}
    write_results(run_dir, results)
    if cfg.eval.enabled:
        results["eval"] = open_run(cfg, run_dir).evaluate(verbose=verbose)
    results["total_seconds"] = time.perf_counter() - t0
    write_results(run_dir, results)
    if cfg.eval.report:
        from contrastkit.report import refresh_run_report

        refresh_run_report(Path(run_dir), verbose=verbose)
    return results
