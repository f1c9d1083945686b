"""Evaluation of a ``gan`` run: sample quality in a contrastkit encoder's feature space and the
discriminator's linear-probe accuracy.

The feature space is ``gan.feature_run`` (a task-``image`` run trained on the same kind of
images) or, by default, a small SimCLR encoder trained once on the real training images and
cached under ``$XDG_CACHE_HOME/contrastkit/gan-features/`` (keyed by the data and the encoder's
settings, not by the GAN, so every GAN run on the same data shares it). It is **not**
Inception-v3: the Fréchet distance here is comparable between runs measured with the same
encoder, never with published FID numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from contrastkit.config import Config
from contrastkit.data.image import ImageDataset
from contrastkit.errors import UserError

FEATURE_SPACE = "contrastkit SimCLR encoder trained on the real data (not Inception: not comparable with published FID)"


def _subset(data: ImageDataset, n: int, seed: int) -> ImageDataset:
    if n >= len(data):
        return data
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return data.subset(idx)


def _feature_config(cfg: Config, size: int, n_train: int) -> dict[str, Any]:
    d, g = cfg.data, cfg.gan
    steps = g.feature_steps
    return {
        "name": "gan-features",
        "task": "image",
        "data": {"name": d.name, "root": d.root, "image_size": size, "train_classes": d.train_classes},
        "model": {"encoder": "convnet5", "width": g.feature_width, "projection_dim": 64, "projection_hidden_dim": 128},
        "method": {"name": "simclr", "temperature": 0.2},
        "optim": {"name": "adamw", "lr": 0.002},
        "train": {"max_steps": steps, "batch_size": min(128, n_train), "seed": 0, "loggers": ["csv"],
                  "checkpoint_every": steps, "progress": False, "num_threads": cfg.train.num_threads,
                  "device": cfg.train.device},
        "eval": {"enabled": False},
    }


def _train_cached_encoder(fcfg: Config, folder: Path, size: int) -> None:
    """Train the default feature encoder into ``folder`` (through a temporary folder, so a
    crash or a concurrent run never leaves half a cache entry)."""
    from contrastkit.runs import load_run_checkpoint
    from contrastkit.tasks.image import ENCODER_FILE, build_model, load_split
    from contrastkit.tasks.runner import train_run
    from contrastkit.train import save_safetensors

    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    train_run(fcfg, tmp, progress=False, verbose=False)
    model = build_model(fcfg, load_split(fcfg, "train").channels, size)
    model.load_state_dict(load_run_checkpoint(tmp)["model"])
    encoder: nn.Module = model.encoder  # type: ignore[assignment]
    save_safetensors(encoder.state_dict(), tmp / ENCODER_FILE)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first: keep its folder
        shutil.rmtree(tmp, ignore_errors=True)


def feature_encoder(cfg: Config, size: int, channels: int, n_train: int, *, verbose: bool) -> tuple[nn.Module, Any, str]:
    """(encoder, its evaluation transform of uint8 images, the run folder it comes from)."""
    from contrastkit.config import config_from_dict
    from contrastkit.data.image.datasets import cache_dir
    from contrastkit.runs import read_run_config
    from contrastkit.tasks.image import _Reference

    if cfg.gan.feature_run is not None:
        folder = Path(cfg.gan.feature_run)
        if not (folder / "config.yaml").is_file():
            raise UserError(f"gan.feature_run {str(folder)!r} is not a run folder (it has no config.yaml)")
        fcfg = read_run_config(folder)
        if fcfg.task != "image":
            raise UserError(f"gan.feature_run {str(folder)!r} is a run of task {fcfg.task!r}; it must be of task image")
    else:
        spec = _feature_config(cfg, size, n_train)
        # the key: what defines the encoder (not the threads or device it is trained with)
        what = {**spec, "train": {k: v for k, v in spec["train"].items() if k not in ("num_threads", "device")}}
        key = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:10]
        folder = cache_dir("gan-features") / f"{cfg.data.name}-{size}px-{key}"
        fcfg = config_from_dict(spec)
        if not (folder / "checkpoints" / "last.pt").is_file():
            if verbose:
                print(f"training the metrics' feature encoder once (SimCLR, {cfg.gan.feature_steps} steps) -> {folder}",
                      flush=True)
            _train_cached_encoder(fcfg, folder, size)
    ref = _Reference(folder, fcfg)
    if ref.train.channels != channels:
        raise UserError(
            f"gan.feature_run {str(folder)!r} was trained on {ref.train.channels}-channel images; this run's have {channels}"
        )
    return ref.encoder(), ref.transform, str(folder)


def _probe(backbone: nn.Module, train: ImageDataset, test: ImageDataset, num_classes: int, seed: int,
           device: torch.device) -> dict[str, Any]:
    from contrastkit.evaluate.features import extract_features
    from contrastkit.evaluate.linear_probe import linear_probe

    def transform(x: Tensor) -> Tensor:
        return x.float().div(255) * 2 - 1

    assert train.labels is not None and test.labels is not None
    f_train = extract_features(backbone, train.images, transform, device=device)
    f_test = extract_features(backbone, test.images, transform, device=device)
    out = linear_probe(f_train, train.labels, f_test, test.labels, num_classes=num_classes,
                       weight_decays=[1e-4, 1e-3, 1e-2], seed=seed, device=device)
    return {"accuracy": out["accuracy"], "weight_decay": out["weight_decay"]}


def evaluate_gan(run_dir: Path, cfg: Config, *, verbose: bool = True) -> dict[str, Any]:
    from contrastkit.evaluate.features import extract_features
    from contrastkit.evaluate.generative import frechet_distance, precision_recall
    from contrastkit.methods.gan import to_uint8
    from contrastkit.tasks.gan import build_gan, load_trained_gan, save_grid
    from contrastkit.tasks.image import load_split
    from contrastkit.tasks.runner import setup_runtime

    device = setup_runtime(cfg, distributed=False)
    g, seed = cfg.gan, cfg.train.seed
    train = load_split(cfg, "train")
    try:
        test = load_split(cfg, "test")
    except UserError:
        test = train  # a folder without a test split: compare with other training images
    if cfg.data.train_classes is not None and test.labels is not None and test is not train:
        test = test.subset(torch.isin(test.labels, torch.tensor(cfg.data.train_classes)))
    size, channels = int(train.images.shape[-1]), train.channels
    model = load_trained_gan(run_dir, cfg, channels, size, device)
    n = min(g.eval_samples, len(test), len(train))
    if verbose:
        print(f"evaluating {run_dir}: {n} generated vs {n} held-out real images", flush=True)
    real = _subset(test, n, seed + 1).images
    real_ref = _subset(train, n, seed + 2).images
    gen = torch.Generator().manual_seed(seed + 3)
    fakes = []
    with torch.no_grad():
        for start in range(0, n, 500):
            fakes.append(to_uint8(model.generate(min(500, n - start), gen, device)).cpu())
    fake = torch.cat(fakes)
    save_grid(model.generate(min(64, n), torch.Generator().manual_seed(seed + 1), device), Path(run_dir) / "plots" / "samples_final.png")

    encoder, transform, where = feature_encoder(cfg, size, channels, len(train), verbose=verbose)
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
        "samples_grid": str(Path(run_dir) / "plots" / "samples_final.png"),
    }
    if train.labels is not None and test.labels is not None:
        m = min(g.probe_samples, len(train))
        p_train, p_test = _subset(train, m, seed + 4), _subset(test, min(m, len(test)), seed + 5)
        out["d_probe"] = _probe(model.backbone, p_train, p_test, train.num_classes, seed, device)
        cfg_random = build_gan(cfg, channels, size, device)  # the same network at initialisation
        out["d_probe_random_init"] = _probe(cfg_random.backbone, p_train, p_test, train.num_classes, seed, device)
        out["d_probe"]["train_images"], out["d_probe"]["test_images"] = len(p_train), len(p_test)
    return out


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
