"""From a Config to a trained, evaluated run folder: builds data, encoder, method and trainer.

Run folder layout: config.yaml, train_log.csv, tensorboard/, checkpoints/last.pt,
encoder.safetensors, results.json, plots/*.png.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from contrastkit.config import Config, config_from_dict, save_config, task_module
from contrastkit.data.image import (
    ImageDataset,
    build_augmentation,
    default_augmentation,
    eval_transform,
    load_image_dataset,
)
from contrastkit.data.image.loader import InMemoryViewLoader
from contrastkit.diagnostics import CollapseMonitor
from contrastkit.encoders import build_image_encoder
from contrastkit.errors import UserError
from contrastkit.methods import BYOL, BarlowTwins, MoCoV2, MoCoV3, SimCLR, SimSiam, SupCon, VICReg
from contrastkit.negatives.distributed import world
from contrastkit.train import (
    Trainer,
    TrainerOptions,
    TrainSummary,
    load_checkpoint,
    resolve_device,
    save_safetensors,
)
from contrastkit.train.distributed import init_from_env, shutdown

CONFIG_FILE = "config.yaml"
RESULTS_FILE = "results.json"


# ----------------------------------------------------------------------------- building


def load_split(cfg: Config, split: str) -> ImageDataset:
    """The configured data set's train or test split."""
    return load_image_dataset(
        cfg.data.name,
        split=split,
        root=cfg.data.root,
        download=cfg.data.download,
        image_size=cfg.data.image_size,
    )


def input_size(cfg: Config, data: ImageDataset) -> int:
    return cfg.data.image_size or data.image_size


def build_encoder(cfg: Config, channels: int, size: int) -> nn.Module:
    return build_image_encoder(
        cfg.model.encoder,
        channels,
        width=cfg.model.width,
        cifar_stem=cfg.model.cifar_stem,
        image_size=size,
    )


def negative_sampling(cfg: Config) -> Any:
    """The configured negative-sampling strategy (None: plain in-batch / queue negatives)."""
    neg = getattr(cfg.method, "negatives", None)
    if neg is None:
        return None
    from contrastkit.negatives.mining import negative_sampling_from_config

    return negative_sampling_from_config(neg)


def build_model(cfg: Config, channels: int, size: int) -> nn.Module:
    """The configured method (cfg.method.name) around a fresh encoder."""
    encoder = build_encoder(cfg, channels, size)
    feature_dim = int(encoder.out_dim)  # type: ignore[arg-type]
    m, p = cfg.method, cfg.model
    proj: dict[str, Any] = {
        "projection_dim": p.projection_dim,
        "projection_hidden_dim": p.projection_hidden_dim,
        "projection_layers": p.projection_layers,
    }
    momentum: dict[str, Any] = {
        "momentum": m.momentum,
        "momentum_final": m.momentum_final,
        "momentum_schedule": m.momentum_schedule,
    }
    contrast: dict[str, Any] = {"temperature": m.temperature, "similarity": m.similarity}
    negatives = negative_sampling(cfg)
    if negatives is not None:
        contrast["negatives"] = negatives
    diag: dict[str, Any] = {"diagnostics": m.diagnostics}
    if m.name == "simclr":
        simclr_kwargs = {
            **proj, **contrast, **diag, "projection_batch_norm": p.projection_batch_norm, "queue_size": m.queue_size,
        }
        return SimCLR(encoder, feature_dim, **simclr_kwargs)
    if m.name == "supcon":
        return SupCon(encoder, feature_dim, **proj, **contrast, **diag, projection_batch_norm=p.projection_batch_norm)
    if m.name == "moco_v2":
        return MoCoV2(
            encoder, feature_dim, **proj, **contrast, **momentum, **diag,
            projection_batch_norm=p.projection_batch_norm, queue_size=m.queue_size,
            symmetric=m.symmetric, in_batch_negatives=m.in_batch_negatives, bn_splits=m.bn_splits,
        )
    if m.name == "moco_v3":
        return MoCoV3(
            encoder, feature_dim, **proj, **contrast, **momentum, **diag,
            predictor_hidden_dim=m.predictor_hidden_dim, bn_splits=m.bn_splits,
        )
    if m.name == "byol":
        return BYOL(encoder, feature_dim, **proj, **momentum, **diag, predictor_hidden_dim=m.predictor_hidden_dim)
    if m.name == "simsiam":
        return SimSiam(encoder, feature_dim, **proj, **diag, predictor_hidden_dim=m.predictor_hidden_dim)
    if m.name == "barlow_twins":
        return BarlowTwins(encoder, feature_dim, **proj, **diag, lambda_offdiag=m.barlow_lambda)
    if m.name == "vicreg":
        return VICReg(
            encoder, feature_dim, **proj, **diag,
            sim_weight=m.vicreg_sim, var_weight=m.vicreg_var, cov_weight=m.vicreg_cov,
        )
    raise UserError(f"method.name {m.name!r} is not an image method")  # pragma: no cover - validated


def uses_labels(cfg: Config) -> bool:
    """Methods that read labels during training (SupCon and its semi-supervised mode)."""
    return cfg.method.name == "supcon"


def visible_labels(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Labels with all but ``fraction`` of each class hidden (-1), chosen with ``seed``;
    every class keeps at least one label."""
    if fraction >= 1.0:
        return labels.clone()
    gen = torch.Generator().manual_seed(seed * 104729 + 11)
    out = torch.full_like(labels, -1)
    for c in labels.unique():
        idx = torch.nonzero(labels == c).flatten()
        keep = max(1, round(fraction * idx.numel()))
        out[idx[torch.randperm(idx.numel(), generator=gen)[:keep]]] = c
    return out


def augmentation_for(cfg: Config, data: ImageDataset) -> Any:
    size = input_size(cfg, data)
    spec = cfg.data.augment if cfg.data.augment is not None else default_augmentation(data.channels, size)
    return build_augmentation(spec, size=size, channels=data.channels, mean=data.mean(), std=data.std())


def trainer_options(cfg: Config, progress: bool = True) -> TrainerOptions:
    lr = cfg.optim.lr
    if cfg.optim.scale_lr_by_batch:
        lr = lr * cfg.train.batch_size / 256
    return TrainerOptions(
        optimizer=cfg.optim.name,
        lr=lr,
        weight_decay=cfg.optim.weight_decay,
        momentum=cfg.optim.momentum,
        warmup_fraction=cfg.optim.warmup_fraction,
        schedule=cfg.optim.schedule,
        final_lr_fraction=cfg.optim.final_lr_fraction,
        grad_clip=cfg.optim.grad_clip,
        epochs=cfg.train.epochs,
        max_steps=cfg.train.max_steps,
        time_budget_minutes=cfg.train.time_budget_minutes,
        precision=cfg.train.precision,
        compile=cfg.train.compile,
        checkpoint_every=cfg.train.checkpoint_every,
        log_every=cfg.train.log_every,
        progress=progress and cfg.train.progress,
        config=cfg.to_dict(),
    )


def setup_runtime(cfg: Config) -> torch.device:
    """Seeds, threads, matmul precision and (under torchrun) the process group; returns the
    training device (cuda:LOCAL_RANK under torchrun on GPUs)."""
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    torch.manual_seed(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device {cfg.train.device!r} asked for CUDA, but no GPU is visible")
    ctx = init_from_env(device, cfg.train.dist_timeout_minutes)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    if ctx.enabled and not ctx.is_main:
        warnings.filterwarnings("ignore")  # rank 0 speaks for the job
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True
    return device


# ----------------------------------------------------------------------------- run folders


def new_run_dir(cfg: Config, out: str | None, resume: bool) -> Path:
    """The run folder: --out, or runs/<name>-<timestamp>; refuses to overwrite without --resume."""
    from contrastkit.train.distributed import env_world_size

    if env_world_size() > 1:  # under torchrun every process must agree on the folder
        if out is None:
            raise UserError("under torchrun pass --out RUN_DIR (every process must write to the same folder)")
        if os.environ.get("RANK", "0") != "0":
            path = Path(out)
            path.mkdir(parents=True, exist_ok=True)
            return path
    if out is None:
        if resume:
            raise UserError("--resume needs --out RUN_DIR (the folder of the run to continue)")
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{cfg.name}-{stamp}"
    else:
        path = Path(out)
    if resume:
        if not (path / "checkpoints" / "last.pt").is_file():
            raise UserError(f"--resume: no checkpoint in {str(path)!r} (expected checkpoints/last.pt)")
    elif path.exists() and any(path.iterdir()):
        raise UserError(
            f"run folder {str(path)!r} already exists; pass --resume to continue it or choose another --out"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_run_config(run_dir: Path) -> Config:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} is not a contrastkit run folder (no {CONFIG_FILE})")
    return config_from_dict(yaml.safe_load(path.read_text()) or {})


def write_results(run_dir: Path, results: dict[str, Any]) -> Path:
    path = Path(run_dir) / RESULTS_FILE
    tmp = path.with_name(f".{RESULTS_FILE}.tmp")
    tmp.write_text(json.dumps(_jsonable(results), indent=2))
    tmp.replace(path)
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj


# ----------------------------------------------------------------------------- train / evaluate


def train(
    cfg: Config,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: list[Any] | None = None,
    verbose: bool = True,
) -> TrainSummary:
    """Train the configured method; checkpoints and logs go to run_dir."""
    device = setup_runtime(cfg)
    rank, world_size = world()
    verbose = verbose and rank == 0
    if cfg.train.batch_size % world_size:
        raise UserError(
            f"train.batch_size {cfg.train.batch_size} (the global batch) is not divisible by the "
            f"{world_size} processes; choose a multiple of {world_size}"
        )
    local_batch = cfg.train.batch_size // world_size
    data = load_split(cfg, "train")
    size = input_size(cfg, data)
    if not resume and rank == 0:
        save_config(cfg, run_dir / CONFIG_FILE)
    model = build_model(cfg, data.channels, size)
    if world_size > 1 and cfg.train.sync_batchnorm:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif verbose:
            print("note: SyncBatchNorm needs GPUs; on CPU each process normalises its own batch", flush=True)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    labels = None
    if uses_labels(cfg):
        if data.labels is None:
            raise UserError(f"method {cfg.method.name!r} needs labels but data set {data.name!r} has none")
        labels = visible_labels(data.labels, cfg.data.label_fraction, cfg.train.seed)
        if verbose:
            print(
                f"{cfg.method.name}: {int((labels >= 0).sum())} of {labels.numel()} training labels "
                f"used (data.label_fraction={cfg.data.label_fraction}); the rest are unlabeled",
                flush=True,
            )
    loader = InMemoryViewLoader(
        data.images,
        batch_size=local_batch,
        augmentation=augmentation_for(cfg, data).to(device),
        views=cfg.data.views,
        seed=cfg.train.seed,
        device=device,
        channels_last=cfg.train.channels_last,
        labels=labels,
        rank=rank,
        world_size=world_size,
    )
    monitor = CollapseMonitor()
    callbacks = [*(callbacks or []), monitor]
    trainer = Trainer(model, loader, run_dir, trainer_options(cfg, progress), device=device, callbacks=callbacks)
    if resume:
        trainer.load_checkpoint()
        if verbose:
            print(f"resumed {run_dir} at step {trainer.step}/{trainer.total_steps}", flush=True)
    if verbose:
        print(
            f"training {cfg.method.name} on {data.name} ({data.images.shape[0]} images, "
            f"{tuple(data.images.shape[1:])}) with {cfg.model.encoder} on {device}: "
            f"{trainer.total_steps} steps of batch {cfg.train.batch_size}",
            flush=True,
        )
    if verbose and world_size > 1:
        print(f"distributed: {world_size} processes, {local_batch} images each per step", flush=True)
    summary = trainer.fit()
    summary.collapsed_at_step = monitor.collapsed_at
    if rank == 0:
        encoder: nn.Module = model.encoder  # type: ignore[assignment]
        save_safetensors(encoder.state_dict(), run_dir / "encoder.safetensors")
    return summary


def load_trained_model(run_dir: Path, cfg: Config, channels: int, size: int, device: torch.device) -> nn.Module:
    """Rebuild the model of a run and load its last checkpoint (code-free load)."""
    model = build_model(cfg, channels, size)
    state = load_checkpoint(Path(run_dir) / "checkpoints" / "last.pt", map_location="cpu")
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def evaluate(run_dir: Path, cfg: Config | None = None, *, verbose: bool = True) -> dict[str, Any]:
    """Evaluate a finished or interrupted run (its last checkpoint) and write results.json."""
    from contrastkit.evaluate.suite import evaluate_run

    run_dir = Path(run_dir)
    cfg = cfg or read_run_config(run_dir)
    if cfg.task != "image":
        out: dict[str, Any] = task_module(cfg.task).evaluate(run_dir, cfg, verbose=verbose)
        return out
    device = setup_runtime(cfg)
    train_data = load_split(cfg, "train")
    test_data = load_split(cfg, "test")
    size = input_size(cfg, train_data)
    model = load_trained_model(run_dir, cfg, train_data.channels, size, device)
    if train_data.labels is None or test_data.labels is None:
        raise UserError(f"data set {cfg.data.name!r} has no labels: nothing to evaluate (embed still works)")
    transform = eval_transform(size=size, mean=train_data.mean(), std=train_data.std())
    augment = augmentation_for(cfg, train_data).to(device)
    seed = cfg.train.seed

    def make_random_encoder() -> nn.Module:
        torch.manual_seed(seed + 4242)
        return build_encoder(cfg, train_data.channels, size)

    if verbose:
        print(f"evaluating {run_dir} on {cfg.data.name} (test split: {test_data.images.shape[0]} images)", flush=True)
    res = evaluate_run(
        model,
        make_random_encoder,
        train_data.images,
        train_data.labels,
        test_data.images,
        test_data.labels,
        num_classes=train_data.num_classes,
        class_names=train_data.classes,
        eval_transform=transform,
        train_transform=augment,
        cfg=cfg.eval,
        device=device,
        out_dir=run_dir / "plots",
        seed=seed,
        channels_last=cfg.train.channels_last,
        verbose=verbose,
    )
    return res


def run_all(
    cfg: Config, run_dir: Path, *, resume: bool = False, progress: bool = True, verbose: bool = True
) -> dict[str, Any]:
    """Train then evaluate; results.json holds both."""
    if cfg.task != "image":
        out: dict[str, Any] = task_module(cfg.task).run_all(
            cfg, run_dir, resume=resume, progress=progress, verbose=verbose
        )
        return out
    return train_and_evaluate(cfg, run_dir, train, evaluate, resume=resume, progress=progress, verbose=verbose)


def train_and_evaluate(
    cfg: Config,
    run_dir: Path,
    train_fn: Any,
    evaluate_fn: Any,
    *,
    resume: bool,
    progress: bool,
    verbose: bool,
    announce: bool = False,
) -> dict[str, Any]:
    """A task's train then evaluate; results.json holds both. Under torchrun rank 0 alone
    evaluates and reports (the other ranks return {})."""
    t0 = time.perf_counter()
    summary = train_fn(cfg, run_dir, resume=resume, progress=progress, verbose=verbose)
    rank, world_size = world()
    if world_size > 1:  # training is over
        shutdown()
        if rank != 0:
            return {}
    results: dict[str, Any] = {"run_dir": str(run_dir), "config": cfg.to_dict(), "train": asdict(summary)}
    write_results(run_dir, results)
    if cfg.eval.enabled:
        if announce and verbose:
            print(f"evaluating {run_dir}", flush=True)
        results["eval"] = evaluate_fn(run_dir, cfg, verbose=verbose)
    results["total_seconds"] = time.perf_counter() - t0
    write_results(run_dir, results)
    return results


def embed(run_dir: Path, spec: str, out: Path, *, batch_size: int = 512) -> tuple[int, int]:
    """Features of the run's encoder for a data set SPEC ('name[:split]' or a folder path) → .npy."""
    import numpy as np

    from contrastkit.evaluate.features import extract_features

    cfg = read_run_config(Path(run_dir))
    if cfg.task != "image":
        shape: tuple[int, int] = task_module(cfg.task).embed(Path(run_dir), spec, Path(out), batch_size=batch_size)
        return shape
    device = setup_runtime(cfg)
    name, _, split = spec.partition(":")
    root = None
    if Path(spec).is_dir():
        name, split, root = "folder", "train", spec
    elif name == "folder":
        name, root, split = "folder", split, "train"
    ref = load_split(cfg, "train")
    size = input_size(cfg, ref)
    data = load_image_dataset(
        name, split=split or "test", root=root if root else cfg.data.root if name == cfg.data.name else None,
        download=False, image_size=size,
    )
    if data.channels != ref.channels:
        raise UserError(
            f"data {spec!r} has {data.channels} channel(s) but the run was trained on {ref.channels}"
        )
    model = load_trained_model(Path(run_dir), cfg, ref.channels, size, device)
    transform = eval_transform(size=size, mean=ref.mean(), std=ref.std())
    encoder: nn.Module = model.encoder  # type: ignore[assignment]
    feats = extract_features(encoder, data.images, transform, batch_size=batch_size, device=device)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, feats.numpy())
    if data.labels is not None:
        np.save(out.with_name(out.stem + ".labels.npy"), data.labels.numpy())
    return int(feats.shape[0]), int(feats.shape[1])
