"""Task ``image_text``: two towers (CLIP / SigLIP) from images with captions — a labelled
image data set whose captions are generated from class names and image attributes, or an
(image, caption) table, or WebDataset-style tar shards (an image and a .txt caption per sample) —
evaluated by zero-shot classification and image↔text retrieval.

Validation (``eval.val_size``): a seeded slice of the training pairs (images with their
captions; for a labelled data set, images and labels whose captions are made as for the test
retrieval) is held out of training, and ``val_hit@1``, the mean of image→text and text→image
hit@1 on it, is measured every ``eval.val_every`` steps and after the last.

Run folder: ``text_encoder/`` (the text tower's transformers folder), ``text_run.json`` (the
image channels, size and normalisation, class names, caption thresholds),
``encoder.safetensors`` (the image tower).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import Tensor, nn

from contrastkit.config import Config, EvalConfig
from contrastkit.data.image import eval_transform
from contrastkit.data.image.decode import is_image_file, read_image_file
from contrastkit.data.image.spec import (
    DataConfig,
    gallery_spec,
    image_items,
    images_for_spec,
    load_split,
)
from contrastkit.data.text.spec import TextConfig, is_text_spec, read_spec_texts
from contrastkit.encoders.image import ModelConfig, build_encoder, full_resolution_stem
from contrastkit.encoders.text import (
    ENCODER_DIR,
    TextEncoder,
    initial_text_encoder,
    saved_text_encoder,
    text_encoder_for_training,
)
from contrastkit.encoders.weights import start_encoder
from contrastkit.errors import UserError
from contrastkit.evaluate.text import before_and_after, text_compare_row, text_results_table
from contrastkit.index.vectors import write_embeddings
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
from contrastkit.training.callbacks import Validation

META_FILE = "text_run.json"
RETRIEVAL_IMAGES = 1000  # test images scored by image↔text retrieval
DEFAULT_AUGMENT: list[dict[str, Any]] = [
    {"op": "random_resized_crop", "scale": [0.7, 1.0]},
    {"op": "horizontal_flip", "p": 0.5},
]
VAL_METRIC = "val_hit@1"  # mean of image→text and text→image hit@1 on the held-out pairs


@dataclass
class ImageTextEvalConfig(EvalConfig):
    """Evaluation of an image_text run, with its validation slice of the training pairs."""

    val_size: int = option(
        0, "validation split: image–caption pairs held out of the training pairs (never trained on; 0: none)", ge=0
    )
    val_seed: int = option(0, "seed of the validation split's draw (independent of train.seed)", ge=0)
    val_every: int = option(0, "image↔text hit@1 on the validation split every N steps (0: after the last step only)",
                            ge=0)
    keep_best: bool = option(
        False, "the run's towers are those of the validation step with the best val_hit@1 (checkpoints/best.pt; "
        "tested, exported), not the last step's; needs eval.val_size",
    )


def image_text_data(cfg: Config, split: str) -> dict[str, Any]:
    """Images (uint8 on CPU) with captions: a labelled data set with generated captions, or a table."""
    from contrastkit.data.image.shards import read_caption_shards
    from contrastkit.data.text.captions import caption_rows_info, read_image_captions
    from contrastkit.data.text.corpus import filter_rows, read_table, resolve_spec

    t: TextConfig = cfg.text
    if t.train_file:
        spec = t.train_file if split == "train" else t.retrieval_file
        if not spec:
            return {}
        shards = read_caption_shards(spec, cfg.data.image_size or 64)  # WebDataset shards: image + .txt
        if shards is not None:
            return {"images": shards[0], "captions": shards[1], "labels": None, "classes": [],
                    **caption_rows_info(shards[0])}
        res = resolve_spec(spec, t.data_root)
        table = filter_rows(read_table(res.path, res.fmt), t.train_filter if split == "train" else t.retrieval_filter)
        images, captions = read_image_captions(
            res.path, t.train_columns[0], t.train_columns[1], table.rows, size=cfg.data.image_size or 64
        )
        return {"images": images, "captions": captions, "labels": None, "classes": [], **caption_rows_info(images)}
    data = load_split(cfg.data, split)
    if data.labels is None:
        raise UserError(f"data set {cfg.data.name!r} has no labels to make captions from; use text.train_file")
    return {
        "images": data.images, "labels": data.labels, "classes": list(data.classes),
        "mean": list(data.mean()), "std": list(data.std()),
    }


def hold_out_pairs(data: dict[str, Any], size: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The training pairs less a seeded slice of ``size`` of them, and the slice: images with their
    labels (captions made from them) or their captions. The draw is the image task's
    (``validation_rows``: the number of pairs, ``size`` and ``seed`` only); one-line error when the
    slice leaves nothing to train on."""
    from contrastkit.data.image.validation import validation_rows

    n = int(data["images"].shape[0])
    if size >= n:
        raise UserError(f"eval.val_size {size} leaves no training pair: there are {n}; use at most {n - 1}")
    rows = validation_rows(n, size, seed)
    held = torch.zeros(n, dtype=torch.bool)
    held[rows] = True
    train, val = dict(data), dict(data)
    for key in ("images", "labels"):
        if data.get(key) is not None:
            train[key], val[key] = data[key][~held], data[key][held]
    if data.get("captions") is not None:
        captions = list(data["captions"])
        train["captions"] = [c for c, h in zip(captions, held.tolist(), strict=True) if not h]
        val["captions"] = [captions[i] for i in rows.tolist()]
    digest = hashlib.sha1(rows.numpy().astype("<i8").tobytes()).hexdigest()
    val["rows"], val["record"] = rows, {"from": "train", "size": size, "of": n, "seed": seed, "rows_sha1": digest}
    return train, val


@torch.no_grad()
def embed_images(model: nn.Module, images: Tensor, transform: Any, batch_size: int) -> Tensor:
    """Projected image embeddings (N, D) on the CPU of uint8 images (the model in its current mode)."""
    m: Any = model
    device = next(model.parameters()).device
    chunks = [m.embed_images(transform(images[i : i + batch_size].to(device))).float().cpu()
              for i in range(0, images.shape[0], batch_size)]
    return torch.cat(chunks)


@torch.no_grad()
def embed_texts(model: nn.Module, texts: list[str], batch_size: int) -> Tensor:
    """Projected text embeddings (N, D) on the CPU."""
    m: Any = model
    device = next(model.parameters()).device
    chunks = []
    for i in range(0, len(texts), batch_size):
        enc = m.text_encoder.tokenize(texts[i : i + batch_size])
        chunks.append(m.embed_texts(enc["input_ids"].to(device), enc["attention_mask"].to(device)).float().cpu())
    return torch.cat(chunks)


def caption_retrieval(images: Tensor, captions: list[str], texts: Callable[[list[str]], Tensor],
                      ks: Sequence[int]) -> dict[str, Any]:
    """Image→text and text→image retrieval of image embeddings (N, D) and their captions (N; the
    corpus is the distinct captions, each relevant to every image it captions)."""
    from contrastkit.evaluate.retrieval import retrieval_metrics

    unique = list(dict.fromkeys(captions))
    cid = {c: i for i, c in enumerate(unique)}
    caption_of = torch.tensor([cid[c] for c in captions])
    zc = texts(unique)
    images_of = [torch.nonzero(caption_of == j).flatten().tolist() for j in range(len(unique))]
    return {
        "image_to_text": {**retrieval_metrics(images, zc, caption_of, ks=ks), "corpus": len(unique)},
        "text_to_image": {**retrieval_metrics(zc, images, images_of, ks=ks), "corpus": len(captions)},
    }


def _build(cfg: Config, text_encoder: TextEncoder, channels: int, size: int) -> nn.Module:
    image_encoder = build_encoder(cfg.model, channels, size)
    return get_method(cfg.method.name, "image_text").build(cfg.method, image_encoder=image_encoder, text_encoder=text_encoder)


# ----------------------------------------------------------------------------- the run


class ImageTextRun(TrainedRun):
    """A two-tower run: both towers and their shared space, before and after training."""

    def meta(self) -> dict[str, Any]:
        """text_run.json: the image input and the caption settings of the run."""
        path = self.path / META_FILE
        if not path.is_file():
            raise UserError(f"{str(self.path)!r} is not a finished image_text run (no {META_FILE}); train it first")
        meta: dict[str, Any] = json.loads(path.read_text())
        return meta

    def image_input(self) -> ImageInput:
        meta, m = self.meta(), self.config.model
        return ImageInput(m.encoder, full_resolution_stem(m.encoder, m.cifar_stem, int(meta["size"])),
                          int(meta["channels"]), int(meta["size"]),
                          [float(v) for v in meta["mean"]], [float(v) for v in meta["std"]])

    def model(self) -> nn.Module:
        """The trained two towers from the last checkpoint (with ``eval.keep_best``: the best
        validation step's, checkpoints/best.pt)."""

        def build() -> nn.Module:
            inp = self.image_input()
            model = _build(self.config, saved_text_encoder(self.config.text, self.path), inp.channels, inp.size)
            model.load_state_dict(load_model_weights(self.path))
            return model.to(self.device).eval()

        return self.cached("model", build)

    def initial_model(self) -> nn.Module:
        """Before training: the pretrained text encoder (or a random one), a random image tower."""
        torch.manual_seed(self.config.train.seed + 4242)
        inp = self.image_input()
        text = initial_text_encoder(self.config.text, self.path)
        return _build(self.config, text, inp.channels, inp.size).to(self.device).eval()

    def image_model(self) -> tuple[nn.Module, nn.Module | None]:
        model: Any = self.model()
        return model.encoder, model.image_proj

    def text_model(self) -> tuple[Any, nn.Module | None]:
        model: Any = self.model()
        return model.text_encoder, model.text_proj

    def _images(self, model: nn.Module, images: Tensor, batch_size: int) -> Tensor:
        inp, device = self.image_input(), next(model.parameters()).device
        transform = cast(Any, eval_transform(size=inp.size, mean=inp.mean, std=inp.std)).to(device)
        return embed_images(model, images, transform, batch_size)

    def _texts(self, model: nn.Module, texts: list[str], batch_size: int) -> Tensor:
        return embed_texts(model, texts, batch_size)

    def encode_images(self, images: Tensor, *, batch_size: int = 512) -> Tensor:
        """Projected image embeddings (N, D) on the CPU of uint8 images."""
        return self._images(self.model(), images, batch_size)

    def encode_texts(self, texts: list[str], *, batch_size: int = 256) -> Tensor:
        """Projected text embeddings (N, D) on the CPU."""
        return self._texts(self.model(), texts, batch_size)

    def sample_images(self, n: int) -> Tensor:
        inp = self.image_input()
        if self.config.text.train_file:  # images of a table: random pixels rather than decoding the table
            gen = torch.Generator().manual_seed(0)
            return torch.randint(0, 256, (n, inp.channels, inp.size, inp.size), generator=gen, dtype=torch.uint8)
        return load_split(self.config.data, "train").images[:n].clone()

    def sample_texts(self) -> list[str]:
        from contrastkit.data.text.captions import prompts
        from contrastkit.data.text.corpus import read_sentences

        t = self.config.text
        try:
            if t.train_file:  # the caption column, not the image column
                return read_sentences(t.train_file, t.train_columns[1:], t.train_filter, data_root=t.data_root, limit=14)
            return [p for group in prompts(self.meta().get("classes") or [], t.zero_shot_templates) for p in group][:14]
        except (UserError, OSError, ValueError):
            return []

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, *, verbose: bool = True) -> dict[str, Any]:
        """Zero-shot accuracy and image↔text retrieval of the trained towers and (``eval.baselines``)
        of the towers before training."""
        batch = min(self.config.eval.batch_size, 256)
        initial = self.initial_model if self.config.eval.baselines else None
        return before_and_after(self.model, initial, lambda model: self._evaluate_model(model, batch), verbose=verbose)

    def _evaluate_model(self, model: nn.Module, batch_size: int) -> dict[str, Any]:
        from contrastkit.data.text.captions import CaptionMaker, prompts

        t: TextConfig = self.config.text
        out: dict[str, Any] = {}
        data = image_text_data(self.config, "test")
        if not data:
            return out
        images: Tensor = data["images"]
        zi = torch.nn.functional.normalize(self._images(model, images, batch_size), dim=1)
        if data["labels"] is not None:
            labels: Tensor = data["labels"]
            classes = data["classes"]
            texts = prompts(classes, t.zero_shot_templates)
            flat = [p for group in texts for p in group]
            zt = torch.nn.functional.normalize(self._texts(model, flat, batch_size), dim=1)
            class_emb = torch.nn.functional.normalize(zt.view(len(classes), len(texts[0]), -1).mean(1), dim=1)
            pred = (zi @ class_emb.T).argmax(1)
            out["zero_shot"] = {
                "accuracy": float((pred == labels).float().mean()), "num_samples": int(labels.shape[0]),
                "num_classes": len(classes), "prompts": texts[0],
            }
            gen = torch.Generator().manual_seed(self.config.train.seed)
            rows = torch.randperm(images.shape[0], generator=gen)[: min(RETRIEVAL_IMAGES, images.shape[0])].tolist()
            maker = CaptionMaker.for_images(images, labels, classes, t.caption_templates, self.meta().get("thresholds") or None)
            captions = maker.fixed(rows, t.caption_templates[-1])
            query_images = zi[torch.tensor(rows)]
        else:
            captions = list(data["captions"])
            rows = list(range(len(captions)))
            query_images = zi
        out.update(caption_retrieval(query_images, captions, lambda texts: self._texts(model, texts, batch_size), t.recall_k))
        return out

    def results_table(self, ev: dict[str, Any]) -> str:
        return text_results_table(ev)

    def compare_row(self, results: dict[str, Any]) -> dict[str, Any]:
        return text_compare_row(results)

    # ------------------------------------------------------------------ embeddings, search, gallery

    def embed_items(
        self, spec: str, *, batch_size: int = 256, unique: bool = False
    ) -> tuple[np.ndarray, list[dict[str, Any]], str]:
        """Texts of a text spec, or images of an image spec, in the shared space."""
        if is_text_spec(spec):
            texts = read_spec_texts(spec, self.config.text, unique=unique)
            return self.encode_texts(texts, batch_size=batch_size).numpy(), [{"text": s} for s in texts], "text"
        inp = self.image_input()
        data = images_for_spec(self.config.data, spec, inp.size)
        if data.channels != inp.channels:
            raise UserError(f"data {spec!r} has {data.channels} channel(s) but the run was trained on {inp.channels}")
        return self.encode_images(data.images, batch_size=batch_size).numpy(), image_items(spec, data), "image"

    def embed(self, spec: str | None, out: Path, *, batch_size: int = 512) -> tuple[int, int]:
        """Embeddings of SPEC → OUT (.npy); texts go to <stem>.texts.txt."""
        if spec is None:
            raise UserError("--data is required for this run: sick:SPLIT, a .txt file, FILE.csv#COLUMN or images")
        return write_embeddings(out, *self.embed_items(spec, batch_size=min(batch_size, 256))[:2])

    def gallery_spec(self) -> str | None:
        """The test images of a labelled data set for ``contrastkit serve`` (none from a table)."""
        return None if self.config.text.train_file else gallery_spec(self.config.data)

    def images(self, spec: str) -> Tensor:
        return images_for_spec(self.config.data, spec, None).images

    def query_modalities(self) -> tuple[str, ...]:
        return ("text", "image")

    def encode_query(self, query: str) -> tuple[np.ndarray, str]:
        """A text query through the text tower, an image file through the image tower."""
        if not is_image_file(query):
            return self.encode_texts([query]).numpy(), "text"
        inp = self.image_input()
        return self.encode_images(read_image_file(query, inp.channels, inp.size)).numpy(), "image"


# ----------------------------------------------------------------------------- the task


@register_task
class ImageTextTask(Task):
    """Image–text two towers (CLIP / SigLIP), evaluated zero-shot and by cross-modal retrieval."""

    name = "image_text"
    sections: ClassVar[dict[str, type | None]] = {"data": DataConfig, "model": ModelConfig, "text": TextConfig,
                                                   "eval": ImageTextEvalConfig}
    unread: ClassVar[dict[str, tuple[str, ...]]] = {
        "data": ("views", "crops", "label_fraction", "stream", "workers", "gpu_decode"),
        "text": ("lazy", "workers", "augment", "sts_file", "sts_columns", "sts_filter", "retrieval_columns",
                 "max_train_examples", "dev_file", "dev_columns", "dev_filter", "dev_fraction",
                 "batch_sampler", "eval_dims"),
        "eval": ("plots",),
    }
    default_method = "clip"
    runs = (ImageTextRun,)

    @classmethod
    def needs(cls, cfg: Config) -> tuple[str, str]:
        return cfg.text.train_file or f"{cfg.data.name} (captions generated)", "text"

    @classmethod
    def validate(cls, cfg: Config) -> None:
        from contrastkit.data.image.shards import names_shards
        from contrastkit.data.text.captions import check_templates

        t: TextConfig = cfg.text
        if t.train_file and not names_shards(t.train_file) and len(t.train_columns) != 2:
            raise UserError(f"image_text from a table needs text.train_columns = [image, caption]; got {t.train_columns}")
        check_templates(t.caption_templates, "text.caption_templates")
        check_templates(t.zero_shot_templates, "text.zero_shot_templates")
        for key, does in (("val_every", "measures on"), ("keep_best", "chooses on")):
            if getattr(cfg.eval, key) and not cfg.eval.val_size:
                raise UserError(f"eval.{key} {does} the validation split: set eval.val_size too "
                                "(e.g. eval.val_size=1000 image–caption pairs held out of the training pairs)")

    @classmethod
    def validation(cls, cfg: Config) -> ValidationSpec:
        """Image↔text retrieval (``val_hit@1``, higher is better) on the training pairs held out by
        ``eval.val_size`` (a tenth of the pairs, at most 1000, where the config holds none out),
        every ``eval.val_every`` steps and after the last."""
        overrides: tuple[str, ...] = ()
        if not cfg.eval.val_size:
            n = int(image_text_data(cfg, "train")["images"].shape[0])
            overrides = (f"eval.val_size={max(1, min(RETRIEVAL_IMAGES, n // 10))}",)
        return ValidationSpec(VAL_METRIC, "max", overrides, "eval.val_every")

    def _data(self, ctx: RunContext) -> dict[str, Any]:
        from contrastkit.data.text.captions import CaptionMaker

        data = image_text_data(ctx.cfg, "train")
        self.val: dict[str, Any] | None = None
        if ctx.cfg.eval.val_size:
            data, self.val = hold_out_pairs(data, ctx.cfg.eval.val_size, ctx.cfg.eval.val_seed)
        images: Tensor = data["images"]
        data["channels"], data["size"] = int(images.shape[1]), int(ctx.cfg.data.image_size or images.shape[2])
        if data["labels"] is not None:
            maker = CaptionMaker.for_images(images, data["labels"], data["classes"], ctx.cfg.text.caption_templates)
            corpus = maker.random(list(range(len(maker.labels))), np.random.default_rng(0))
            for names in maker.names:
                corpus += list(names)
            data.update(captions=maker.random, thresholds=maker.thresholds, corpus=corpus)
            if self.val is not None:  # the held-out images' captions, fixed, as the test retrieval makes them
                val_maker = CaptionMaker.for_images(self.val["images"], self.val["labels"], data["classes"],
                                                    ctx.cfg.text.caption_templates, maker.thresholds)
                self.val["captions"] = val_maker.fixed(range(len(val_maker.labels)), ctx.cfg.text.caption_templates[-1])
        else:
            fixed = list(data["captions"])

            def captions(rows: list[int], rng: np.random.Generator) -> list[str]:
                return [fixed[i] for i in rows]

            data.update(captions=captions, thresholds={}, corpus=fixed)
        return data

    def training(self, ctx: RunContext) -> Training:
        from contrastkit.data.image import build_augmentation
        from contrastkit.data.text.loader import ImageTextLoader

        cfg = ctx.cfg
        data = self.data = self._data(ctx)
        text_encoder = text_encoder_for_training(cfg.text, ctx.run_dir, data["corpus"], resume=ctx.resume, rank=ctx.rank)
        model: Any = _build(cfg, text_encoder, data["channels"], data["size"])
        start_encoder(model.encoder, cfg.model, data["size"], resume=ctx.resume, log=ctx.log)  # the stem; model.init_from
        self.model = model
        spec = cfg.data.augment if cfg.data.augment is not None else DEFAULT_AUGMENT
        augmentation = build_augmentation(spec, size=data["size"], channels=data["channels"], mean=data["mean"], std=data["std"])
        channels_last = channels_last_for(model.encoder, ctx.device, cfg.train.channels_last)
        loader = ImageTextLoader(
            data["images"], data["captions"], model.text_encoder.tokenize, batch_size=ctx.local_batch,
            augmentation=augmentation.to(ctx.device), seed=cfg.train.seed, device=ctx.device,
            channels_last=channels_last, rank=ctx.rank, world_size=ctx.world_size,
        )
        if channels_last:
            model.encoder.to(memory_format=torch.channels_last)
        if not ctx.resume and ctx.is_main:  # before training: an interrupted run can be evaluated
            keys = ("channels", "size", "mean", "std", "classes", "thresholds")
            (ctx.run_dir / META_FILE).write_text(json.dumps({"task": self.name, **{k: data[k] for k in keys}}, indent=2))
        self.validator = self._validator(ctx, model, data)
        return Training(GradientStep(model, cfg.optim, cfg.train, device=ctx.device, note=ctx.log), loader, unit="pairs",
                        callbacks=[self.validator] if self.validator is not None else [])

    def _validator(self, ctx: RunContext, model: Any, data: dict[str, Any]) -> Validation | None:
        """Image↔text hit@1 on the held-out pairs (None without them), every ``eval.val_every``
        steps and after the last; with ``eval.keep_best`` the best step's weights are kept."""
        if self.val is None:
            return None
        val, batch = self.val, min(ctx.cfg.eval.batch_size, 256)
        transform = cast(Any, eval_transform(size=data["size"], mean=data["mean"], std=data["std"])).to(ctx.device)

        def evaluate() -> dict[str, float]:
            was = model.training
            model.eval()
            try:
                zi = torch.nn.functional.normalize(embed_images(model, val["images"], transform, batch), dim=1)
                out = caption_retrieval(zi, val["captions"], lambda texts: embed_texts(model, texts, batch), [1])
            finally:
                model.train(was)
            i2t, t2i = float(out["image_to_text"]["hit@1"]), float(out["text_to_image"]["hit@1"])
            return {"value": (i2t + t2i) / 2, "image_to_text_hit@1": i2t, "text_to_image_hit@1": t2i}

        describe = {"pairs": len(val["captions"]), "captions": len(set(val["captions"]))}
        keep = keep_best_weights(model, ctx.run_dir, VAL_METRIC) if ctx.cfg.eval.keep_best else None
        return Validation(evaluate, metric=VAL_METRIC, every=ctx.cfg.eval.val_every or None, direction="max",
                          describe=describe, note=None if ctx.cfg.train.progress else ctx.log, keep=keep)

    def describe(self, ctx: RunContext) -> str:
        return (
            f"training {ctx.cfg.method.name} on {self.data['images'].shape[0]} image–caption pairs with text "
            f"encoder {ctx.cfg.text.encoder} on {ctx.device}"
        )

    def after_training(self, ctx: RunContext, summary: TrainSummary) -> dict[str, Any]:
        if not ctx.is_main:
            return {}
        extra: dict[str, Any] = {}
        if self.validator is not None and self.val is not None:
            self.validator.finish(summary.steps)
            extra["validation"] = {**self.validator.results(), "split": self.val["record"]}
        if (ctx.run_dir / BEST).is_file():  # eval.keep_best: the best validation step's weights
            self.model.load_state_dict(load_model_weights(ctx.run_dir, ctx.device))
        self.model.text_encoder.save(ctx.run_dir / ENCODER_DIR)
        save_safetensors(self.model.encoder.state_dict(), ctx.run_dir / "encoder.safetensors")
        return extra
