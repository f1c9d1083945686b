"""Evaluation of a ``gan`` run: sample quality in a contrastkit encoder's feature space and the
discriminator's linear-probe accuracy.

The feature space is ``gan.feature_run`` (a task-``image`` run trained on the same kind of
images) or, by default, a small SimCLR encoder trained once on the real training images and
cached under ``$XDG_CACHE_HOME/contrastkit/gan-features/`` (keyed by the data, the encoder's
settings and the contrastkit version, not by the GAN, so every GAN run on the same data shares
it). It is **not** Inception-v3: the Fréchet distance here is comparable between runs measured
with the same encoder, never with published FID numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from contrastkit.config import Config, read_yaml
from contrastkit.data.image import ImageDataset, eval_transform
from contrastkit.data.image.datasets import cache_dir
from contrastkit.data.image.loader import InMemoryViewLoader
from contrastkit.data.image.spec import DataConfig, augmentation_for, load_split, seeded_subset
from contrastkit.encoders.image import ModelConfig, build_encoder
from contrastkit.errors import UserError
from contrastkit.evaluate.features import extract_features
from contrastkit.methods.base import build_image_method
from contrastkit.methods.gan import to_uint8
from contrastkit.methods.registry import get_method
from contrastkit.options import build
from contrastkit.tasks.gan.model import build_gan, save_grid
from contrastkit.training import (
    GradientStep,
    OptimConfig,
    TrainConfig,
    Trainer,
    Training,
    save_safetensors,
)
from contrastkit.training.callbacks import Validation

FEATURE_SPACE = "contrastkit SimCLR encoder trained on the real data (not Inception: not comparable with published FID)"
ENCODER_FILE = "encoder.safetensors"  # an image run's trained encoder (and the cached one's)
FEATURES_FILE = "features.json"  # the cached encoder's data and model sections
VAL_METRIC = "val_fd"  # the validation: Fréchet distance of generated to held-out real training images


def _sections(data: dict[str, Any]) -> tuple[DataConfig, ModelConfig]:
    """The data and model sections of an image run's config (keys a newer config may add dropped)."""

    def section(cls: type, values: Any) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}
        return build(cls, {k: v for k, v in (values or {}).items() if k in names}, "")

    return section(DataConfig, data.get("data")), section(ModelConfig, data.get("model"))


def _default_spec(cfg: Config, size: int, n_train: int) -> dict[str, Any]:
    """What defines the default feature encoder (its cache key)."""
    from contrastkit.version import __version__

    d, g = cfg.data, cfg.gan
    return {
        "version": __version__,
        "data": {"name": d.name, "root": d.root, "image_size": size, "train_classes": d.train_classes},
        "model": {"encoder": "convnet5", "width": g.feature_width, "projection_dim": 64, "projection_hidden_dim": 128},
        "method": {"name": "simclr", "temperature": 0.2},
        "optim": {"name": "adamw", "lr": 0.002},
        "train": {"max_steps": g.feature_steps, "batch_size": min(128, n_train), "seed": 0},
    }


def _train_default_encoder(cfg: Config, device: torch.device, spec: dict[str, Any], folder: Path) -> None:
    """SimCLR through the one loop, into ``folder`` (written through a temporary folder, so a
    crash or a concurrent run never leaves half a cache entry)."""
    data_cfg, model_cfg = _sections(spec)
    method = get_method("simclr", "image").make_options({"temperature": spec["method"]["temperature"]})
    optim = build(OptimConfig, spec["optim"], "optim.")
    t = cfg.train
    train = build(TrainConfig, {**spec["train"], "loggers": ["csv"], "checkpoint_every": spec["train"]["max_steps"],
                                "progress": False, "num_threads": t.num_threads, "device": t.device}, "train.")
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.manual_seed(train.seed)
    data = load_split(data_cfg, "train")
    model = build_image_method(method, model_cfg, data.channels, int(data_cfg.image_size or data.image_size))
    model = model.to(memory_format=torch.channels_last)
    loader = InMemoryViewLoader(
        data.images, resident=not data.mapped, rows=data.rows, batch_size=train.batch_size,
        augmentation=augmentation_for(data_cfg, data).to(device), views=2, seed=train.seed, device=device,
        channels_last=True,
    )
    step = GradientStep(model, optim, train, device=device)
    Trainer(Training(step, loader, unit="images"), tmp, train, device=device, optim=optim, progress=False).fit()
    encoder: nn.Module = model.encoder  # type: ignore[assignment]
    save_safetensors(encoder.state_dict(), tmp / ENCODER_FILE)
    (tmp / FEATURES_FILE).write_text(json.dumps(spec, indent=2))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first: keep its folder
        shutil.rmtree(tmp, ignore_errors=True)


def feature_encoder(
    cfg: Config, device: torch.device, size: int, channels: int, n_train: int, *, verbose: bool
) -> tuple[nn.Module, Any, str]:
    """(encoder, its evaluation transform of uint8 images, the folder it comes from)."""
    from safetensors.torch import load_file

    g = cfg.gan
    if g.feature_run is not None:
        folder = Path(g.feature_run)
        if not (folder / "config.yaml").is_file():
            raise UserError(f"gan.feature_run {str(folder)!r} is not a run folder (it has no config.yaml)")
        saved = read_yaml(folder / "config.yaml", "run config")
        if saved.get("task", "image") != "image":
            raise UserError(f"gan.feature_run {str(folder)!r} is a run of task {saved.get('task')!r}; it must be of task image")
        if not (folder / ENCODER_FILE).is_file():
            raise UserError(f"gan.feature_run {str(folder)!r} has no {ENCODER_FILE}; was it trained to the end?")
    else:
        spec = _default_spec(cfg, size, n_train)
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
        folder = cache_dir("gan-features") / f"{cfg.data.name}-{size}px-{key}"
        if not (folder / ENCODER_FILE).is_file():
            if verbose:
                print(f"training the metrics' feature encoder once (SimCLR, {g.feature_steps} steps) -> {folder}", flush=True)
            _train_default_encoder(cfg, device, spec, folder)
        saved = json.loads((folder / FEATURES_FILE).read_text())
    data_cfg, model_cfg = _sections(saved)
    fit = load_split(data_cfg, "train")
    if fit.channels != channels:
        raise UserError(
            f"gan.feature_run {str(folder)!r} was trained on {fit.channels}-channel images; this run's have {channels}"
        )
    fit_size = int(data_cfg.image_size or fit.image_size)
    encoder = build_encoder(model_cfg, fit.channels, fit_size)
    encoder.load_state_dict(load_file(str(folder / ENCODER_FILE)))
    transform = eval_transform(size=fit_size, mean=fit.mean(), std=fit.std())
    return encoder.to(device).eval(), transform.to(device), str(folder)  # type: ignore[attr-defined]


def _probe(backbone: nn.Module, train: ImageDataset, test: ImageDataset, num_classes: int, seed: int,
           device: torch.device) -> dict[str, Any]:
    from contrastkit.evaluate.linear_probe import linear_probe

    def transform(x: Tensor) -> Tensor:
        return x.float().div(255) * 2 - 1

    assert train.labels is not None and test.labels is not None
    f_train = extract_features(backbone, train.images, transform, device=device)
    f_test = extract_features(backbone, test.images, transform, device=device)
    out = linear_probe(f_train, train.labels, f_test, test.labels, num_classes=num_classes,
                       weight_decays=[1e-4, 1e-3, 1e-2], seed=seed, device=device)
    return {"accuracy": out["accuracy"], "weight_decay": out["weight_decay"]}


def evaluate_gan(cfg: Config, model: Any, device: torch.device, run_dir: Path, *, verbose: bool = True) -> dict[str, Any]:
    """Sample quality of a trained GAN ``model`` in the feature space, and its discriminator's probe."""
    from contrastkit.evaluate.generative import frechet_distance, precision_recall

    g, seed = cfg.gan, cfg.train.seed
    train = load_split(cfg.data, "train")
    try:
        test = load_split(cfg.data, "test")
    except UserError:
        test = train  # a folder without a test split: compare with other training images
    if cfg.data.train_classes is not None and test.labels is not None and test is not train:
        test = test.subset(torch.isin(test.labels, torch.tensor(cfg.data.train_classes)))
    size, channels = int(train.images.shape[-1]), train.channels
    n = min(g.eval_samples, len(test), len(train))
    if verbose:
        print(f"evaluating {run_dir}: {n} generated vs {n} held-out real images", flush=True)
    real = seeded_subset(test, n, seed + 1).images
    real_ref = seeded_subset(train, n, seed + 2).images
    fake = _generated(model, n, seed + 3, device)
    grid = Path(run_dir) / "plots" / "samples_final.png"
    save_grid(model.generate(min(64, n), torch.Generator().manual_seed(seed + 1), device), grid)

    encoder, transform, where = feature_encoder(cfg, device, size, channels, len(train), verbose=verbose)
    feats = [extract_features(encoder, x, transform, device=device) for x in (real, fake, real_ref)]
    pr = precision_recall(feats[0], feats[1], k=g.pr_k)
    pr_ref = precision_recall(feats[0], feats[2], k=g.pr_k)
    out: dict[str, Any] = {
        "metric_space": FEATURE_SPACE,
        "feature_encoder": where,
        "samples": n,
        "fd": frechet_distance(feats[0], feats[1]),
        "precision": pr["precision"],
        "recall": pr["recall"],
        "k": g.pr_k,
        "real_vs_real": {"fd": frechet_distance(feats[0], feats[2]), "precision": pr_ref["precision"],
                         "recall": pr_ref["recall"]},
        "samples_grid": str(grid),
    }
    if train.labels is not None and test.labels is not None:
        m = min(g.probe_samples, len(train))
        p_train, p_test = seeded_subset(train, m, seed + 4), seeded_subset(test, min(m, len(test)), seed + 5)
        out["d_probe"] = _probe(model.backbone, p_train, p_test, train.num_classes, seed, device)
        fresh = build_gan(cfg, channels, size, device)  # the same network at initialisation
        out["d_probe_random_init"] = _probe(fresh.backbone, p_train, p_test, train.num_classes, seed, device)
        out["d_probe"]["train_images"], out["d_probe"]["test_images"] = len(p_train), len(p_test)
    return out


def _generated(model: Any, n: int, seed: int, device: torch.device) -> Tensor:
    """``n`` images of the generator in eval mode from the noise of ``seed``, uint8 on the CPU (its
    mode restored)."""
    generator = model.generator
    was = generator.training
    generator.eval()
    gen = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            return torch.cat([to_uint8(model.generate(min(500, n - start), gen, device)).cpu() for start in range(0, n, 500)])
    finally:
        generator.train(was)


def fd_validation(cfg: Config, model: Any, held_out: Tensor, record: dict[str, Any], device: torch.device, *,
                  verbose: bool = True, note: Callable[[str], None] | None = None) -> Validation:
    """The validation callback of a gan run: the Fréchet distance (``val_fd``, lower is better) of
    as many generated images (the same noise every time) to the real ``held_out`` images (uint8,
    held out of the training split; ``record`` says which) in the metrics' feature space (that of
    the evaluation), every ``eval.val_every`` steps and after the last. The feature encoder is
    made now, before training (by default trained once and cached, the random state of training
    left as it was), and the held-out images are encoded once."""
    train = load_split(cfg.data, "train")  # what the evaluation's feature encoder is keyed by
    size = int(train.images.shape[-1])
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # training's random state untouched
        encoder, transform, where = feature_encoder(cfg, device, size, train.channels, len(train), verbose=verbose)
    real = extract_features(encoder, held_out, transform, device=device)
    n, seed = int(held_out.shape[0]), cfg.train.seed + 6

    def evaluate() -> float:
        from contrastkit.evaluate.generative import frechet_distance

        fake = extract_features(encoder, _generated(model, n, seed, device), transform, device=device)
        return frechet_distance(real, fake)

    describe = {"held_out": record, "generated": n, "metric_space": FEATURE_SPACE, "feature_encoder": where}
    return Validation(evaluate, metric=VAL_METRIC, every=cfg.eval.val_every or None, direction="min",
                      describe=describe, note=note)


def gan_results_table(ev: dict[str, Any]) -> str:
    def row(name: str, d: dict[str, Any]) -> str:
        return f"  {name:<22}{d['fd']:>10.3f}{d['precision']:>11.3f}{d['recall']:>8.3f}"

    lines = [
        f"{ev['samples']} generated vs held-out real images, k={ev['k']}; feature space: {ev['metric_space']}",
        f"  {'':<22}{'FD':>10}{'precision':>11}{'recall':>8}",
        row("generated", ev),
        row("real (train vs test)", ev["real_vs_real"]),
    ]
    if "d_probe" in ev:
        lines.append(
            f"discriminator linear probe: {100 * ev['d_probe']['accuracy']:.1f}% "
            f"(same network at initialisation: {100 * ev['d_probe_random_init']['accuracy']:.1f}%)"
        )
    return "\n".join(lines)
