"""The one life cycle every task runs through: train (data → model → loader → Trainer), then
evaluate, then report (results.json, report.html); plus embedding export. The steps themselves
belong to the task (:class:`contrastkit.tasks.base.Task`); this module only drives them.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from contrastkit.config import Config
from contrastkit.errors import UserError
from contrastkit.negatives.distributed import world
from contrastkit.runs import read_results, read_run_config, save_run_config, write_results
from contrastkit.tasks.base import Callback, RunContext, get_task
from contrastkit.train import Trainer, TrainerOptions, TrainSummary, resolve_device
from contrastkit.train.distributed import init_from_env, shutdown
from contrastkit.train.malloc import keep_freed_memory


def setup_runtime(cfg: Config, *, distributed: bool = True) -> torch.device:
    """Seeds, threads, glibc's malloc thresholds and matmul precision; with ``distributed``, under torchrun, the process
    group too. Returns the device (cuda:LOCAL_RANK under torchrun on GPUs). Evaluation and
    export pass ``distributed=False``: they run in one process, after training."""
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    if cfg.train.keep_freed_memory:
        keep_freed_memory()  # see contrastkit.train.malloc
    torch.manual_seed(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device {cfg.train.device!r} asked for CUDA, but no GPU is visible")
    if distributed:
        ctx = init_from_env(device, cfg.train.dist_timeout_minutes)
        if ctx.enabled and device.type == "cuda":
            device = torch.device("cuda", ctx.local_rank)
        if ctx.enabled and not ctx.is_main:
            warnings.filterwarnings("ignore")  # rank 0 speaks for the job
    elif device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True
    return device


def trainer_options(cfg: Config, progress: bool = True) -> TrainerOptions:
    """The trainer's view of a config: its optim and train sections."""
    return TrainerOptions(optim=cfg.optim, train=cfg.train, progress=progress, config=cfg.to_dict())


def _sync_batchnorm(ctx: RunContext, model: nn.Module) -> nn.Module:
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if ctx.world_size == 1 or not ctx.cfg.train.sync_batchnorm or not has_bn:
        return model
    if ctx.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ctx.log("note: SyncBatchNorm needs GPUs; on CPU each process normalises its own batch")
    return model


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
    Checkpoints, logs and the trained artifacts go to ``run_dir``."""
    task = get_task(cfg.task)
    device = setup_runtime(cfg)
    rank, world_size = world()
    if cfg.train.batch_size % world_size:
        raise UserError(
            f"train.batch_size {cfg.train.batch_size} (the global batch) is not divisible by the "
            f"{world_size} processes; choose a multiple of {world_size}"
        )
    ctx = RunContext(cfg, Path(run_dir), device, rank, world_size, resume, verbose and rank == 0)
    if not resume and ctx.is_main:
        save_run_config(cfg, ctx.run_dir)
    custom = task.fit(ctx)
    if custom is not None:
        return custom
    data = task.data(ctx)
    model = _sync_batchnorm(ctx, task.model(ctx, data))
    loader = task.loader(ctx, data, model)
    trainer = Trainer(model, loader, ctx.run_dir, trainer_options(cfg, progress), device=device)
    trainer.callbacks = [*(callbacks or []), *task.callbacks(ctx, trainer, data, model)]
    if resume:
        trainer.load_checkpoint()
        ctx.log(f"resumed {run_dir} at step {trainer.step}/{trainer.total_steps}")
    ctx.log(f"{task.describe(ctx, data)}: {trainer.total_steps} steps of batch {cfg.train.batch_size}")
    if world_size > 1:
        ctx.log(f"distributed: {world_size} processes, {ctx.local_batch} {task.unit} each per step")
    summary = trainer.fit()
    extra = task.after_training(ctx, data, model, summary)
    return summary, extra


def train(cfg: Config, run_dir: Path, **options: Any) -> TrainSummary:
    """Train the configured task and method; ``options`` as :func:`train_run`'s."""
    return train_run(cfg, run_dir, **options)[0]


def evaluate(run_dir: Path, cfg: Config | None = None, *, verbose: bool = True, report: bool = True) -> dict[str, Any]:
    """Evaluate a finished or interrupted run with its task's evaluation; with ``report``, the
    run's report.html is refreshed with it."""
    cfg = cfg or read_run_config(Path(run_dir))
    out: dict[str, Any] = get_task(cfg.task).evaluate(Path(run_dir), cfg, verbose=verbose)
    if report:
        from contrastkit.report import refresh_run_report

        refresh_run_report(Path(run_dir), {**read_results(Path(run_dir)), "eval": out}, verbose=verbose)
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
        results["eval"] = evaluate(run_dir, cfg, verbose=verbose, report=False)
    results["total_seconds"] = time.perf_counter() - t0
    write_results(run_dir, results)
    from contrastkit.report import refresh_run_report

    refresh_run_report(Path(run_dir), verbose=verbose)
    return results


def embed(run_dir: Path, spec: str | None, out: Path, *, batch_size: int = 512) -> tuple[int, int]:
    """Write embeddings of a data spec computed by a run's trained model (see each task)."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    cfg = read_run_config(Path(run_dir))
    return get_task(cfg.task).embed(Path(run_dir), cfg, spec, Path(out), batch_size=batch_size)
