"""Task ``image``: self-supervised learning from unlabeled images (SimCLR, MoCo, BYOL, ...).

data: a uint8 data set (digits, Fashion-MNIST, CIFAR, STL-10, an image folder; in memory, or
memory-mapped from a store written by ``contrastkit prepare``: ``data.name: store``), augmented in batches on the device → model: the configured method around a fresh image
encoder → evaluation of the frozen encoder (kNN, linear and few-label probes, fine-tuning)
against the same network at random initialisation and raw pixels.

Run folder, besides the common files: ``encoder.safetensors`` (the trained encoder),
``plots/`` (curves, t-SNE map, nearest neighbours), ``index/`` (see contrastkit.index).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from contrastkit.config import Config, DataConfig, ModelConfig
from contrastkit.data.image import (
    ImageDataset,
    build_augmentation,
    default_augmentation,
    eval_transform,
    load_image_dataset,
    mapped,
)
from contrastkit.data.image.loader import InMemoryViewLoader
from contrastkit.data.image.stream import FolderStream, StreamViewLoader, open_folder_stream
from contrastkit.diagnostics import CollapseMonitor
from contrastkit.encoders import build_image_encoder
from contrastkit.errors import UserError
from contrastkit.methods.base import HeadOptions
from contrastkit.methods.registry import get_method
from contrastkit.runs import load_run_checkpoint
from contrastkit.tasks.base import RunContext, Task, for_queries, register_task
from contrastkit.train import TrainSummary, save_safetensors

ENCODER_FILE = "encoder.safetensors"
# a store's raw-pixel baseline: float32 pixels of train + test at most this size (else a sample)
RAW_PIXEL_BUDGET = 512 << 20


# ----------------------------------------------------------------------------- building blocks


def load_split(cfg: Config, split: str, *, all_classes: bool = False) -> ImageDataset:
    """The configured data set's train or test split; the train split restricted to
    ``data.train_classes`` where given (unless ``all_classes``)."""
    d: DataConfig = cfg.data
    data = load_image_dataset(d.name, split=split, root=d.root, download=d.download, image_size=d.image_size)
    if split != "train" or all_classes or d.train_classes is None:
        return data
    if data.labels is None:
        raise UserError(f"data.train_classes needs labels, and data set {data.name!r} has none")
    unknown = sorted(set(d.train_classes) - set(range(data.num_classes)))
    if unknown:
        raise UserError(f"data.train_classes {unknown} are not classes of {data.name} (0..{data.num_classes - 1})")
    # a store stays mapped: the chosen rows are read by index, not copied
    return data.select(torch.isin(data.labels, torch.tensor(d.train_classes)))


def stream_split(cfg: Config, split: str = "train") -> FolderStream:
    """The configured folder's split as a file list (``data.stream``), restricted to
    ``data.train_classes`` where given."""
    d: DataConfig = cfg.data
    stream = open_folder_stream(split, d.root, d.image_size)
    if split != "train" or d.train_classes is None:
        return stream
    if stream.labels is None:
        raise UserError("data.train_classes needs labels, and this folder has none")
    unknown = sorted(set(d.train_classes) - set(range(stream.num_classes)))
    if unknown:
        raise UserError(f"data.train_classes {unknown} are not classes of the folder (0..{stream.num_classes - 1})")
    keep = torch.isin(stream.labels, torch.tensor(d.train_classes))
    return FolderStream(
        [f for f, k in zip(stream.files, keep.tolist(), strict=True) if k],
        stream.labels[keep], stream.classes, stream.channels, stream.image_size,
    )


def fit_data(cfg: Config) -> ImageDataset | FolderStream:
    """What training read (its channels, size and normalisation): the train split, in memory or
    as a stream."""
    return stream_split(cfg) if cfg.data.stream else load_split(cfg, "train")


def episode_classes(cfg: Config, num_classes: int) -> list[int] | None:
    """The classes the few-shot episodes draw from: all, or those not pre-trained on (novel)."""
    if cfg.eval.episode_classes == "all":
        return None
    return sorted(set(range(num_classes)) - set(cfg.data.train_classes or []))


def input_size(cfg: Config, data: ImageDataset | FolderStream) -> int:
    return int(cfg.data.image_size or data.image_size)


def build_encoder(cfg: Config, channels: int, size: int) -> nn.Module:
    m: ModelConfig = cfg.model
    return build_image_encoder(m.encoder, channels, width=m.width, cifar_stem=m.cifar_stem, image_size=size)


def head_options(cfg: Config) -> HeadOptions:
    """The projection head of the recipe's ``model`` section."""
    m: ModelConfig = cfg.model
    return HeadOptions(m.projection_dim, m.projection_hidden_dim, m.projection_layers, m.projection_batch_norm)


def build_model(cfg: Config, channels: int, size: int) -> nn.Module:
    """The configured method around a fresh encoder."""
    encoder = build_encoder(cfg, channels, size)
    spec = get_method(cfg.method.name, "image")
    return spec.build(cfg.method, encoder=encoder, feature_dim=int(encoder.out_dim), head=head_options(cfg))  # type: ignore[arg-type]


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


def augmentation_for(cfg: Config, data: ImageDataset | FolderStream) -> Any:
    size = input_size(cfg, data)
    spec = cfg.data.augment if cfg.data.augment is not None else default_augmentation(data.channels, size)
    return build_augmentation(spec, size=size, channels=data.channels, mean=data.mean(), std=data.std())


def load_trained_model(run_dir: Path, cfg: Config, channels: int, size: int, device: torch.device) -> nn.Module:
    """Rebuild the model of a run and load its last checkpoint (code-free load)."""
    model = build_model(cfg, channels, size)
    state = load_run_checkpoint(run_dir)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def _subset(data: ImageDataset, limit: int | None, seed: int) -> ImageDataset:
    """A seeded random subset of at most ``limit`` images (all of them without a limit)."""
    n = data.images.shape[0]
    if limit is None or limit >= n:
        return data
    return data.subset(torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + 17))[:limit].sort().values)


def images_for_spec(cfg: Config, spec: str, size: int | None) -> ImageDataset:
    """The images of a data spec ('name[:split]' or a folder) at ``size`` (None: as stored)."""
    name, _, split = spec.partition(":")
    root = None
    if Path(spec).is_dir():
        name, split, root = "folder", "train", spec
    elif name == "folder":
        name, root, split = "folder", split, "train"
    elif name == cfg.data.name:
        root = cfg.data.root
    return load_image_dataset(name, split=split or "test", root=root, download=False, image_size=size)


def gallery_spec(cfg: Config) -> str | None:
    """The data spec of the images to browse in ``contrastkit serve``: the configured data
    set's test split (an image folder: its images)."""
    d: DataConfig = cfg.data
    if d.name == "folder":
        return d.root
    return f"{d.name}:test"


class _Reference:
    """The run's training data (channels, size, normalisation), its trained model and device."""

    def __init__(self, run_dir: Path, cfg: Config, *, model: bool = True) -> None:
        from contrastkit.tasks.runner import setup_runtime

        self.device = setup_runtime(cfg, distributed=False)
        self.train = load_split(cfg, "train", all_classes=True)  # the probes' labelled bank
        fit = self.train if cfg.data.train_classes is None and not cfg.data.stream else fit_data(cfg)
        self.fit = fit  # what training read: its normalisation and augmentation
        self.size = input_size(cfg, fit)
        self.transform = eval_transform(size=self.size, mean=fit.mean(), std=fit.std())
        self.model = load_trained_model(run_dir, cfg, self.train.channels, self.size, self.device) if model else None

    def encoder(self) -> nn.Module:
        assert self.model is not None
        out: nn.Module = self.model.encoder  # type: ignore[assignment]
        return out


# ----------------------------------------------------------------------------- the task


@register_task
class ImageTask(Task):
    """Self-supervised learning from images, evaluated with frozen-feature probes."""

    name = "image"
    sections: ClassVar[dict[str, type]] = {"data": DataConfig, "model": ModelConfig}
    default_method = "simclr"
    unit = "images"
    query_modalities: ClassVar[tuple[str, ...]] = ("image",)

    def validate(self, cfg: Config) -> None:
        if cfg.eval.episode_classes == "novel" and not cfg.data.train_classes:
            raise UserError("eval.episode_classes=novel needs data.train_classes (the classes to pre-train on)")
        d: DataConfig = cfg.data
        if d.stream and d.name != "folder":
            raise UserError(f"data.stream reads image folders only (data.name=folder), not {d.name!r}")
        if d.gpu_decode and not d.stream:
            raise UserError("data.gpu_decode needs data.stream=true")
        if d.gpu_decode and not torch.cuda.is_available():
            raise UserError("data.gpu_decode needs a CUDA GPU, and none is available")
        splits = getattr(cfg.method, "bn_splits", 1)
        if cfg.train.batch_size % splits:
            raise UserError(
                f"train.batch_size {cfg.train.batch_size} must be divisible by method.bn_splits {splits}"
            )

    def data(self, ctx: RunContext) -> ImageDataset | FolderStream:
        data = fit_data(ctx.cfg)
        if get_method(ctx.cfg.method.name).uses_labels and data.labels is None:
            raise UserError(f"method {ctx.cfg.method.name!r} needs labels but data set {data.name!r} has none")
        return data

    def model(self, ctx: RunContext, data: ImageDataset | FolderStream) -> nn.Module:
        model = build_model(ctx.cfg, data.channels, input_size(ctx.cfg, data))
        if ctx.cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def loader(
        self, ctx: RunContext, data: ImageDataset | FolderStream, model: nn.Module
    ) -> InMemoryViewLoader | StreamViewLoader:
        cfg = ctx.cfg
        labels = None
        if get_method(cfg.method.name).uses_labels:
            assert data.labels is not None
            labels = visible_labels(data.labels, cfg.data.label_fraction, cfg.train.seed)
            ctx.log(
                f"{cfg.method.name}: {int((labels >= 0).sum())} of {labels.numel()} training labels "
                f"used (data.label_fraction={cfg.data.label_fraction}); the rest are unlabeled"
            )
        common: dict[str, Any] = {
            "batch_size": ctx.local_batch,
            "augmentation": augmentation_for(cfg, data).to(ctx.device),
            "views": cfg.data.views,
            "seed": cfg.train.seed,
            "device": ctx.device,
            "channels_last": cfg.train.channels_last,
            "labels": labels,
            "rank": ctx.rank,
            "world_size": ctx.world_size,
        }
        if isinstance(data, FolderStream):
            return StreamViewLoader(data, workers=cfg.data.workers, gpu_decode=cfg.data.gpu_decode, **common)
        return InMemoryViewLoader(data.images, resident=not data.mapped, rows=data.rows, **common)

    def callbacks(self, ctx: RunContext, trainer: Any, data: Any, model: nn.Module) -> list[Any]:
        ctx.state["monitor"] = CollapseMonitor()
        return [ctx.state["monitor"]]

    def describe(self, ctx: RunContext, data: ImageDataset | FolderStream) -> str:
        cfg = ctx.cfg
        shape = (data.channels, data.image_size, data.image_size)
        how = f", streamed by {cfg.data.workers} worker(s)" if isinstance(data, FolderStream) else ""
        return (
            f"training {cfg.method.name} on {data.name} ({len(data)} images, "
            f"{shape}{how}) with {cfg.model.encoder} on {ctx.device}"
        )

    def after_training(self, ctx: RunContext, data: Any, model: nn.Module, summary: TrainSummary) -> dict[str, Any]:
        summary.collapsed_at_step = ctx.state["monitor"].collapsed_at
        if ctx.is_main:
            encoder: nn.Module = model.encoder  # type: ignore[assignment]
            save_safetensors(encoder.state_dict(), ctx.run_dir / ENCODER_FILE)
        return {}

    def evaluate(self, run_dir: Path, cfg: Config, *, verbose: bool = True) -> dict[str, Any]:
        from contrastkit.evaluate.suite import evaluate_run

        ref = _Reference(run_dir, cfg)
        test_data = load_split(cfg, "test")
        if ref.train.labels is None or test_data.labels is None:
            raise UserError(f"data set {cfg.data.name!r} has no labels: nothing to evaluate (embed still works)")
        channels, seed = ref.train.channels, cfg.train.seed
        mapped_store = ref.train.mapped or test_data.mapped
        train_data = _subset(ref.train, cfg.eval.max_train_samples, seed)
        test_data = _subset(test_data, cfg.eval.max_test_samples, seed + 1)
        assert train_data.labels is not None and test_data.labels is not None

        def make_random_encoder() -> nn.Module:
            torch.manual_seed(seed + 4242)
            return build_encoder(cfg, channels, ref.size)

        if verbose:
            print(f"evaluating {run_dir} on {cfg.data.name} (test split: {test_data.images.shape[0]} images)", flush=True)
        assert ref.model is not None
        return evaluate_run(
            ref.model,
            make_random_encoder,
            train_data.images,
            train_data.labels,
            test_data.images,
            test_data.labels,
            num_classes=ref.train.num_classes,
            class_names=ref.train.classes,
            eval_transform=ref.transform,
            train_transform=augmentation_for(cfg, ref.fit).to(ref.device),
            episode_classes=episode_classes(cfg, ref.train.num_classes),
            cfg=cfg.eval,
            device=ref.device,
            out_dir=Path(run_dir) / "plots",
            seed=seed,
            channels_last=cfg.train.channels_last,
            verbose=verbose,
            release=mapped.release if mapped_store else None,
            pixel_budget=RAW_PIXEL_BUDGET if mapped_store else None,
        )

    def results_table(self, ev: dict[str, Any]) -> str:
        from contrastkit.evaluate.suite import results_table

        return "accuracy (%) on the test split:\n" + results_table(ev)

    # ------------------------------------------------------------------ embeddings and search

    def _features(
        self, run_dir: Path, cfg: Config, spec: str, batch_size: int
    ) -> tuple[torch.Tensor, ImageDataset]:
        from contrastkit.evaluate.features import extract_features

        ref = _Reference(run_dir, cfg)
        data = images_for_spec(cfg, spec, ref.size)
        if data.channels != ref.train.channels:
            raise UserError(
                f"data {spec!r} has {data.channels} channel(s) but the run was trained on {ref.train.channels}"
            )
        feats = extract_features(ref.encoder(), data.images, ref.transform, batch_size=batch_size, device=ref.device)
        return feats, data

    def embed_items(
        self, run_dir: Path, cfg: Config, spec: str, *, batch_size: int = 512, unique: bool = False
    ) -> tuple[np.ndarray, list[dict[str, Any]], str]:
        """Features of the images of ``spec``, one description per image (with its class
        name where the data set has labels), and the modality ``"image"``."""
        feats, data = self._features(run_dir, cfg, spec, batch_size)
        items: list[dict[str, Any]] = []
        for i in range(data.images.shape[0]):
            item: dict[str, Any] = {"image": f"{spec}#{i}"}
            if data.labels is not None:
                label = int(data.labels[i])
                item["label"] = data.classes[label] if label < len(data.classes) else label
            items.append(item)
        return feats.numpy(), items, "image"

    def embed(self, run_dir: Path, cfg: Config, spec: str | None, out: Path, *, batch_size: int) -> tuple[int, int]:
        """Features of ``spec`` → OUT (.npy); labels → <stem>.labels.npy where there are some."""
        if spec is None:
            raise UserError("--data is required for this run: NAME[:SPLIT] (e.g. fashion-mnist:test) or an image folder")
        feats, data = self._features(run_dir, cfg, spec, batch_size)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, feats.numpy())
        if data.labels is not None:
            np.save(out.with_name(out.stem + ".labels.npy"), data.labels.numpy())
        return int(feats.shape[0]), int(feats.shape[1])

    def gallery_spec(self, cfg: Config) -> str | None:
        """The images ``contrastkit serve`` shows in a grid (their neighbours on a click)."""
        return gallery_spec(cfg)

    def encode_query(self, run_dir: Path, cfg: Config, query: str) -> tuple[np.ndarray, str]:
        """The embedding of an image file with the run's encoder (modality "image")."""
        from contrastkit.index.search import IMAGE_SUFFIXES, is_image_query, read_query_image

        if not is_image_query(query):
            raise UserError(
                f"this is an image run: the query must be an image file ({', '.join(IMAGE_SUFFIXES)}); "
                f"{query!r} is not one"
            )
        ref = for_queries(run_dir, "reference", lambda: _Reference(run_dir, cfg))
        x = read_query_image(query, ref.train.channels, ref.size)
        with torch.no_grad():
            z = ref.encoder()(ref.transform(x.to(ref.device)))
        return z.float().cpu().numpy(), "image"
