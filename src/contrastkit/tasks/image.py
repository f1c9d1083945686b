"""Task ``image``: self-supervised learning from unlabeled images (SimCLR, MoCo, BYOL, ...).

data: a uint8 data set (digits, Fashion-MNIST, CIFAR, STL-10, an image folder; in memory, or
memory-mapped from a store written by ``contrastkit prepare``: ``data.name: store``, or streamed
from a folder), augmented in batches on the device → model: the configured method around a fresh
image encoder → evaluation of the frozen encoder (kNN, linear and few-label probes, episodes,
fine-tuning) against the same network at random initialisation and raw pixels.

Run folder, besides the common files: ``encoder.safetensors`` (the trained encoder),
``plots/`` (curves, t-SNE map, nearest neighbours), ``index/`` (see contrastkit.index).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from contrastkit.config import Config, EvalConfig
from contrastkit.data.image import ImageDataset, eval_transform, mapped
from contrastkit.data.image.augment import build_augmentation
from contrastkit.data.image.decode import IMAGE_SUFFIXES, is_image_file, read_image_file
from contrastkit.data.image.loader import InMemoryViewLoader
from contrastkit.data.image.spec import (
    DataConfig,
    augmentation_for,
    gallery_spec,
    image_items,
    images_for_spec,
    input_size,
    load_split,
    seeded_subset,
    view_count,
    view_options,
    visible_labels,
)
from contrastkit.data.image.stream import FolderStream, StreamViewLoader
from contrastkit.data.image.validation import ValidationSplit, default_val_size, pretraining_data, validation_split
from contrastkit.encoders.image import ModelConfig, build_encoder, full_resolution_stem
from contrastkit.encoders.weights import load_encoder_weights, start_encoder
from contrastkit.errors import UserError
from contrastkit.evaluate.features import extract_features
from contrastkit.evaluate.linear_probe import LINEAR_PROTOCOLS
from contrastkit.evaluate.monitor import METRIC as MONITOR_METRIC
from contrastkit.evaluate.monitor import knn_monitor
from contrastkit.methods.base import build_image_method, check_views
from contrastkit.methods.registry import get_method
from contrastkit.options import option
from contrastkit.runs import BEST, keep_best_weights, load_model_weights
from contrastkit.tasks.base import ImageInput, RunContext, Task, TrainedRun, ValidationSpec, register_task
from contrastkit.training import (
    GradientStep,
    Training,
    TrainSummary,
    channels_last_for,
    save_safetensors,
)
from contrastkit.training.callbacks import CollapseMonitor, Validation
from contrastkit.training.trainer import Callback

ENCODER_FILE = "encoder.safetensors"
# a store's raw-pixel baseline: float32 pixels of train + test at most this size (else a sample)
RAW_PIXEL_BUDGET = 512 << 20


@dataclass
class ImageEvalConfig(EvalConfig):
    """Evaluation of frozen features (probes, episodes), fine-tuning and pictures."""

    knn: bool = option(True, "weighted kNN classifier")
    knn_k: int = option(200, "neighbours of the kNN classifier", ge=1)
    knn_temperature: float = option(0.1, "temperature of the kNN vote weights", gt=0)
    linear_probe: bool = option(True, "linear probe on all labels")
    few_label_shots: list[int] = option(help="labels per class of the few-label probes", factory=lambda: [1, 10, 100], ge=1)
    few_label_draws: int = option(5, "random label draws per few-label probe", ge=1)
    finetune: bool = option(False, "fine-tune the encoder vs. training from scratch")
    finetune_shots: list[int] = option(help="labels per class for fine-tuning (0: all)", factory=lambda: [10, 0], ge=0)
    finetune_epochs: int = option(30, "fine-tuning epochs", ge=1)
    finetune_lr: float = option(1e-3, "fine-tuning learning rate", gt=0)
    tsne_points: int = option(2000, "test points in the t-SNE map", ge=1)
    max_train_samples: int | None = option(
        None, "probe with a seeded random subset of this many labelled training images (quick checks)", ge=1
    )
    max_test_samples: int | None = option(None, "evaluate on a seeded random subset of the test split", ge=1)
    episodes: int = option(0, "N-way K-shot episodes on the test features (0: none; 600 is the usual count)", ge=0)
    episode_ways: int = option(5, "classes per episode (N)", ge=2)
    episode_shots: list[int] = option(help="labelled examples per class (K), one evaluation each", factory=lambda: [1, 5], ge=1)
    episode_queries: int = option(15, "query examples per class and episode", ge=1)
    episode_metric: str = option("cosine", "prototype classifier: cosine or euclidean", choices=("cosine", "euclidean"))
    episode_classes: str = option(
        "all", "all test classes, or novel: the classes not in data.train_classes", choices=("all", "novel")
    )
    val_size: int = option(
        0, "validation split: images held out of the training split (never trained on, not in the probes' bank; 0: none)",
        ge=0,
    )
    val_seed: int = option(0, "seed of the validation split's draw (independent of train.seed)", ge=0)
    monitor_every: int = option(0, "kNN accuracy on the validation split every N steps (0: after the last step only)", ge=0)
    monitor_bank: int = option(2000, "monitor: labelled training images in the kNN bank (seeded sample)", ge=1)
    monitor_val: int = option(1000, "monitor: validation images classified (seeded sample)", ge=1)
    keep_best: bool = option(
        False, "the run's encoder is the one of the validation step with the best val_knn_acc (checkpoints/best.pt; "
        "tested, exported), not the last step's; needs eval.val_size",
    )
    linear_protocol: str = option(
        "lbfgs", "linear probe: lbfgs (frozen features, L2 chosen on a held-out split), sgd (the published protocol: "
        "SGD on the frozen encoder with crop + flip, cosine schedule) or both", choices=LINEAR_PROTOCOLS,
    )
    linear_epochs: int | None = option(None, "SGD protocol: epochs (default: 100 on a GPU, as published; 10 on CPU)", ge=1)
    linear_lr: float = option(0.1, "SGD protocol: learning rate at batch 256 (scaled linearly with the batch)", gt=0)
    linear_batch_size: int = option(256, "SGD protocol: batch size", ge=1)
    linear_weight_decay: float = option(0.0, "SGD protocol: weight decay", ge=0)
    linear_crop_scale: list[float] = option(
        help="SGD protocol: area range of the random resized crop", factory=lambda: [0.08, 1.0], gt=0, le=1
    )


# ----------------------------------------------------------------------------- the run


class ImageRun(TrainedRun):
    """An image run: its encoder (as trained) with the input transform of its training data."""

    @property
    def data_config(self) -> DataConfig:
        data: DataConfig = self.config.data
        return data

    def validation_split(self) -> ValidationSplit | None:
        """The validation slice of the training split (``eval.val_size``), or None."""
        ev: ImageEvalConfig = self.config.eval
        return self.cached("validation", lambda: validation_split(self.data_config, ev.val_size, ev.val_seed))

    def train_data(self) -> ImageDataset:
        """The train split (all classes) less the validation slice: the probes' labelled bank."""
        split = self.validation_split()
        return self.cached("train", lambda: load_split(self.data_config, "train", all_classes=True)
                           if split is None else split.rest())

    def _fit(self) -> ImageDataset | FolderStream:
        d = self.data_config
        if d.train_classes is None and not d.stream:
            return self.train_data()
        return pretraining_data(d, self.validation_split())

    def image_input(self) -> ImageInput:
        def build() -> ImageInput:
            fit = self._fit()
            m: ModelConfig = self.config.model
            size = input_size(self.data_config, fit)
            return ImageInput(m.encoder, full_resolution_stem(m.encoder, m.cifar_stem, size), fit.channels, size,
                              [float(v) for v in fit.mean()], [float(v) for v in fit.std()])

        return self.cached("input", build)

    def transform(self) -> nn.Module:
        inp = self.image_input()
        out: nn.Module = eval_transform(size=inp.size, mean=inp.mean, std=inp.std).to(self.device)  # type: ignore[attr-defined]
        return out

    def model(self) -> nn.Module:
        """The trained method (encoder and heads) from the run's last checkpoint (with
        ``eval.keep_best``: the best validation step's, checkpoints/best.pt), in eval mode."""

        def build() -> nn.Module:
            inp = self.image_input()
            model = build_image_method(self.config.method, self.config.model, inp.channels, inp.size)
            model.load_state_dict(load_model_weights(self.path))
            return model.to(self.device).eval()

        return self.cached("model", build)

    def image_model(self) -> tuple[nn.Module, nn.Module | None]:
        encoder: nn.Module = self.model().encoder  # type: ignore[assignment]
        return encoder, None

    def encode_images(self, images: Tensor, *, batch_size: int = 512) -> Tensor:
        """Features (N, D) on the CPU of uint8 images (N, C, size, size), as evaluation sees them."""
        return extract_features(self.image_model()[0], images, self.transform(), batch_size=batch_size, device=self.device)

    def sample_images(self, n: int) -> Tensor:
        return self.train_data().images[:n].clone()

    def random_encoder(self) -> nn.Module:
        """The same network at random initialisation (the baseline)."""
        inp = self.image_input()
        torch.manual_seed(self.config.train.seed + 4242)
        return build_encoder(self.config.model, inp.channels, inp.size)

    def starting_encoder(self, verbose: bool = True) -> nn.Module | None:
        """The network at the weights training started from (``model.init_from``; a baseline), or
        None: a run that started from a random init, or whose starting weights are gone."""
        source = self.config.model.init_from
        if source is None:
            return None
        if not Path(source).exists():
            if verbose:
                print(f"  the starting weights model.init_from {source!r} are gone: that baseline is left out", flush=True)
            return None
        encoder = self.random_encoder()
        load_encoder_weights(encoder, source)
        return encoder

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, *, verbose: bool = True) -> dict[str, Any]:
        from contrastkit.evaluate.suite import evaluate_run

        cfg, seed = self.config, self.config.train.seed
        ev: ImageEvalConfig = cfg.eval  # the image task's eval section
        train = self.train_data()
        test = load_split(self.data_config, "test")
        if train.labels is None or test.labels is None:
            raise UserError(f"data set {self.data_config.name!r} has no labels: nothing to evaluate (embed still works)")
        store = train.mapped or test.mapped
        train_sub = seeded_subset(train, ev.max_train_samples, seed * 7919 + 17)
        test_sub = seeded_subset(test, ev.max_test_samples, (seed + 1) * 7919 + 17)
        assert train_sub.labels is not None and test_sub.labels is not None
        if verbose:
            print(f"evaluating {self.path} on {self.data_config.name} (test split: {len(test_sub)} images)", flush=True)
        split = self.validation_split()
        val = split.validation() if split is not None else None
        model = self.model()
        channels_last = channels_last_for(model, self.device, cfg.train.channels_last)
        return evaluate_run(
            model, self.random_encoder, train_sub.images, train_sub.labels, test_sub.images, test_sub.labels,
            num_classes=train.num_classes, class_names=train.classes, eval_transform=self.transform(),
            train_transform=augmentation_for(self.data_config, self._fit()).to(self.device),
            episode_classes=self._episode_classes(train.num_classes), cfg=ev, device=self.device,
            out_dir=self.path / "plots", seed=seed, channels_last=channels_last, verbose=verbose,
            release=mapped.release if store else None, pixel_budget=RAW_PIXEL_BUDGET if store else None,
            linear_transform=self._linear_augmentation(),
            validation=None if val is None or val.labels is None else (val.images, val.labels),
            starting_encoder=self.starting_encoder(verbose) if ev.baselines else None,
        )

    def _linear_augmentation(self) -> nn.Module:
        """The SGD protocol's light augmentation: random resized crop and horizontal flip."""
        inp, ev = self.image_input(), self.config.eval
        ops: list[dict[str, Any]] = [{"op": "random_resized_crop", "scale": list(ev.linear_crop_scale)},
                                     {"op": "horizontal_flip", "p": 0.5}]
        return build_augmentation(ops, size=inp.size, channels=inp.channels, mean=inp.mean, std=inp.std).to(self.device)

    def _episode_classes(self, num_classes: int) -> list[int] | None:
        """The classes the few-shot episodes draw from: all, or those not pre-trained on (novel)."""
        if self.config.eval.episode_classes == "all":
            return None
        return sorted(set(range(num_classes)) - set(self.data_config.train_classes or []))

    def results_table(self, ev: dict[str, Any]) -> str:
        from contrastkit.evaluate.suite import results_table

        return "accuracy (%) on the test split:\n" + results_table(ev)

    def compare_row(self, results: dict[str, Any]) -> dict[str, Any]:
        from contrastkit.evaluate.suite import compare_figures

        return compare_figures(results)

    # ------------------------------------------------------------------ embeddings, search, gallery

    def _spec_images(self, spec: str) -> ImageDataset:
        inp = self.image_input()
        data = images_for_spec(self.data_config, spec, inp.size)
        if data.channels != inp.channels:
            raise UserError(f"data {spec!r} has {data.channels} channel(s) but the run was trained on {inp.channels}")
        return data

    def embed_items(
        self, spec: str, *, batch_size: int = 512, unique: bool = False
    ) -> tuple[np.ndarray, list[dict[str, Any]], str]:
        """Features of the images of ``spec``, one description per image (with its class name
        where the data set has labels), and the modality ``"image"``."""
        data = self._spec_images(spec)
        return self.encode_images(data.images, batch_size=batch_size).numpy(), image_items(spec, data), "image"

    def embed(self, spec: str | None, out: Path, *, batch_size: int = 512) -> tuple[int, int]:
        """Features of ``spec`` → OUT (.npy); labels → <stem>.labels.npy where there are some."""
        if spec is None:
            raise UserError("--data is required for this run: NAME[:SPLIT] (e.g. fashion-mnist:test) or an image folder")
        data = self._spec_images(spec)
        feats = self.encode_images(data.images, batch_size=batch_size)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, feats.numpy())
        if data.labels is not None:
            np.save(out.with_name(out.stem + ".labels.npy"), data.labels.numpy())
        return int(feats.shape[0]), int(feats.shape[1])

    def gallery_spec(self) -> str | None:
        """The images ``contrastkit serve`` shows in a grid (their neighbours on a click)."""
        return gallery_spec(self.data_config)

    def images(self, spec: str) -> Tensor:
        """The uint8 images of a data spec, as stored."""
        return images_for_spec(self.data_config, spec, None).images

    def query_modalities(self) -> tuple[str, ...]:
        return ("image",)

    def encode_query(self, query: str) -> tuple[np.ndarray, str]:
        """The embedding of an image file with the run's encoder (modality "image")."""
        if not is_image_file(query):
            raise UserError(
                f"this is an image run: the query must be an image file ({', '.join(IMAGE_SUFFIXES)}); "
                f"{query!r} is not one"
            )
        inp = self.image_input()
        return self.encode_images(read_image_file(query, inp.channels, inp.size)).numpy(), "image"


# ----------------------------------------------------------------------------- the task


@register_task
class ImageTask(Task):
    """Self-supervised learning from images, evaluated with frozen-feature probes."""

    name = "image"
    sections: ClassVar[dict[str, type | None]] = {"data": DataConfig, "model": ModelConfig, "eval": ImageEvalConfig}
    default_method = "simclr"
    runs = (ImageRun,)

    @classmethod
    def validate(cls, cfg: Config) -> None:
        for key, does in (("monitor_every", "measures on"), ("keep_best", "chooses on")):
            if getattr(cfg.eval, key) and not cfg.eval.val_size:
                raise UserError(f"eval.{key} {does} the validation split: set eval.val_size too "
                                "(e.g. eval.val_size=1000 images held out of the training split)")
        if cfg.eval.episode_classes == "novel" and not cfg.data.train_classes:
            raise UserError("eval.episode_classes=novel needs data.train_classes (the classes to pre-train on)")
        check_views(cfg.method.name, *view_count(cfg.data))
        splits = getattr(cfg.method, "bn_splits", 1)
        if cfg.train.batch_size % splits:
            raise UserError(
                f"train.batch_size {cfg.train.batch_size} must be divisible by method.bn_splits {splits}"
            )

    @classmethod
    def validation(cls, cfg: Config) -> ValidationSpec:
        """kNN accuracy (``val_knn_acc``, higher is better) on the labelled slice of the training
        split held out by ``eval.val_size`` (a tenth of the split, at most 5,000 images, where
        the config holds none out), every ``eval.monitor_every`` steps and after the last."""
        if cfg.eval.val_size:
            return ValidationSpec(MONITOR_METRIC, "max", (), "eval.monitor_every")
        if cfg.data.stream:
            raise UserError("the image task validates on a slice of the training split, which data.stream does not "
                            "offer yet; prepare a store (contrastkit prepare)")
        size = default_val_size(cfg.data)
        return ValidationSpec(MONITOR_METRIC, "max", (f"eval.val_size={size}",), "eval.monitor_every")

    def training(self, ctx: RunContext) -> Training:
        cfg, d = ctx.cfg, ctx.cfg.data
        self.split = validation_split(d, cfg.eval.val_size, cfg.eval.val_seed)
        data = self.data = pretraining_data(d, self.split)
        uses_labels = get_method(cfg.method.name).uses_labels
        if uses_labels and data.labels is None:
            raise UserError(f"method {cfg.method.name!r} needs labels but data set {data.name!r} has none")
        size = input_size(d, data)
        encoder = build_encoder(cfg.model, data.channels, size)
        start_encoder(encoder, cfg.model, size, resume=ctx.resume, log=ctx.log)  # the stem chosen; model.init_from
        model = build_image_method(cfg.method, cfg.model, data.channels, size, encoder=encoder)
        channels_last = channels_last_for(model, ctx.device, cfg.train.channels_last)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        labels = None
        if uses_labels:
            assert data.labels is not None
            labels = visible_labels(data.labels, d.label_fraction, cfg.train.seed)
            ctx.log(
                f"{cfg.method.name}: {int((labels >= 0).sum())} of {labels.numel()} training labels "
                f"used (data.label_fraction={d.label_fraction}); the rest are unlabeled"
            )
        common: dict[str, Any] = {
            "batch_size": ctx.local_batch, **view_options(d, data, ctx.device),
            "seed": cfg.train.seed, "device": ctx.device, "channels_last": channels_last, "labels": labels,
            "rank": ctx.rank, "world_size": ctx.world_size,
        }
        loader: InMemoryViewLoader | StreamViewLoader
        if isinstance(data, FolderStream):
            loader = StreamViewLoader(data, workers=d.workers, gpu_decode=d.gpu_decode, **common)
        else:
            loader = InMemoryViewLoader(data.images, resident=not data.mapped, rows=data.rows, **common)
        self.monitor = CollapseMonitor()
        callbacks: list[Callback] = [self.monitor]
        self.knn_monitor = self._knn_monitor(ctx, model, data, channels_last)
        if self.knn_monitor is not None:
            callbacks.append(self.knn_monitor)
        step = GradientStep(model, cfg.optim, cfg.train, device=ctx.device, note=ctx.log)
        return Training(step, loader, unit="images", callbacks=callbacks)

    def _knn_monitor(self, ctx: RunContext, model: nn.Module, data: ImageDataset | FolderStream,
                     channels_last: bool) -> Validation | None:
        ev: ImageEvalConfig = ctx.cfg.eval
        if self.split is None:
            return None
        transform = eval_transform(size=input_size(ctx.cfg.data, data), mean=data.mean(), std=data.std())
        transform.to(ctx.device)  # type: ignore[attr-defined]
        return knn_monitor(
            self.split, model.encoder, bank_size=ev.monitor_bank, val_size=ev.monitor_val, transform=transform,  # type: ignore[arg-type]
            every=ev.monitor_every or None, k=ev.knn_k, temperature=ev.knn_temperature, batch_size=ev.batch_size,
            device=ctx.device, channels_last=channels_last, note=ctx.log,
            keep=keep_best_weights(model, ctx.run_dir, MONITOR_METRIC) if ev.keep_best else None,
        )

    def describe(self, ctx: RunContext) -> str:
        data, cfg = self.data, ctx.cfg
        shape = (data.channels, data.image_size, data.image_size)
        how = f", streamed by {cfg.data.workers} worker(s)" if isinstance(data, FolderStream) else ""
        return (
            f"training {cfg.method.name} on {data.name} ({len(data)} images, "
            f"{shape}{how}) with {cfg.model.encoder} on {ctx.device}, batch {cfg.train.batch_size}"
        )

    def after_training(self, ctx: RunContext, summary: TrainSummary) -> dict[str, Any]:
        summary.collapsed_at_step = self.monitor.collapsed_at
        extra: dict[str, Any] = {}
        if ctx.is_main:
            if self.split is not None and self.knn_monitor is not None:
                self.knn_monitor.finish(summary.steps)
                extra["validation"] = {**self.knn_monitor.results(), "split": self.split.record()}
            if (ctx.run_dir / BEST).is_file():  # eval.keep_best: the best validation step's weights
                self.model.load_state_dict(load_model_weights(ctx.run_dir, ctx.device))
            encoder: nn.Module = self.model.encoder  # type: ignore[assignment]
            save_safetensors(encoder.state_dict(), ctx.run_dir / ENCODER_FILE)
        return extra
