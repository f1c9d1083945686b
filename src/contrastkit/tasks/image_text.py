"""Task ``image_text``: two towers (CLIP / SigLIP) from images with captions — a labelled
image data set whose captions are generated from class names and image attributes, or an
(image, caption) table — evaluated by zero-shot classification and image↔text retrieval.

Run folder: as the text task (``text_encoder/``, ``text_run.json`` with the image channels,
size and normalisation), plus ``encoder.safetensors`` (the image tower).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import Tensor, nn

from contrastkit.config import Config, DataConfig, ModelConfig
from contrastkit.errors import UserError
from contrastkit.tasks.base import RunContext, for_queries, register_task
from contrastkit.tasks.image import build_encoder, gallery_spec, images_for_spec
from contrastkit.tasks.text import (
    TextConfig,
    TextTask,
    is_text_spec,
    read_meta,
    text_encoder_for_training,
)
from contrastkit.train import TrainSummary, save_safetensors

RETRIEVAL_IMAGES = 1000  # test images scored by image↔text retrieval
DEFAULT_AUGMENT: list[dict[str, Any]] = [
    {"op": "random_resized_crop", "scale": [0.7, 1.0]},
    {"op": "horizontal_flip", "p": 0.5},
]


def image_text_data(cfg: Config, split: str) -> dict[str, Any]:
    """Images (uint8 on CPU) with captions: a labelled data set with generated captions, or a table."""
    from contrastkit.data.text.captions import caption_rows_info, read_image_captions
    from contrastkit.data.text.corpus import filter_rows, read_table, resolve_spec

    t: TextConfig = cfg.text
    if t.train_file:
        spec = t.train_file if split == "train" else t.retrieval_file
        if not spec:
            return {}
        res = resolve_spec(spec, t.data_root)
        table = filter_rows(read_table(res.path, res.fmt), t.train_filter if split == "train" else t.retrieval_filter)
        images, captions = read_image_captions(
            res.path, t.train_columns[0], t.train_columns[1], table.rows, size=cfg.data.image_size or 64
        )
        return {"images": images, "captions": captions, "labels": None, "classes": [], **caption_rows_info(images)}
    from contrastkit.tasks.image import load_split

    data = load_split(cfg, split)
    if data.labels is None:
        raise UserError(f"data set {cfg.data.name!r} has no labels to make captions from; use text.train_file")
    return {
        "images": data.images, "labels": data.labels, "classes": list(data.classes),
        "mean": list(data.mean()), "std": list(data.std()),
    }


@torch.no_grad()
def encode_images(model: nn.Module, meta: dict[str, Any], images: Tensor, *, batch_size: int = 512) -> Tensor:
    """Projected image-tower embeddings (N, D) on the CPU for uint8 (N, C, H, W) images."""
    from contrastkit.data.image import eval_transform

    m = cast(Any, model)
    device = next(model.parameters()).device
    transform = cast(Any, eval_transform(size=int(meta["size"]), mean=meta["mean"], std=meta["std"])).to(device)
    chunks = [
        m.embed_images(transform(images[start : start + batch_size].to(device))).float().cpu()
        for start in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(chunks)


@register_task
class ImageTextTask(TextTask):
    """Image–text two towers (CLIP / SigLIP), evaluated zero-shot and by cross-modal retrieval."""

    name = "image_text"
    sections: ClassVar[dict[str, type]] = {"data": DataConfig, "model": ModelConfig, "text": TextConfig}
    default_method = "clip"
    unit = "pairs"
    query_modalities: ClassVar[tuple[str, ...]] = ("text", "image")

    def validate(self, cfg: Config) -> None:
        from contrastkit.data.text.captions import check_templates

        t: TextConfig = cfg.text
        if t.train_file and len(t.train_columns) != 2:
            raise UserError(f"image_text from a table needs text.train_columns = [image, caption]; got {t.train_columns}")
        check_templates(t.caption_templates, "text.caption_templates")
        check_templates(t.zero_shot_templates, "text.zero_shot_templates")

    # ------------------------------------------------------------------ training

    def data(self, ctx: RunContext) -> dict[str, Any]:
        from contrastkit.data.text.captions import CaptionMaker

        data = image_text_data(ctx.cfg, "train")
        images: Tensor = data["images"]
        data["channels"], data["size"] = int(images.shape[1]), int(ctx.cfg.data.image_size or images.shape[2])
        if data["labels"] is not None:
            maker = CaptionMaker.for_images(images, data["labels"], data["classes"], ctx.cfg.text.caption_templates)
            corpus = maker.random(list(range(len(maker.labels))), np.random.default_rng(0))
            for names in maker.names:
                corpus += list(names)
            data.update(captions=maker.random, thresholds=maker.thresholds, corpus=corpus)
        else:
            fixed = list(data["captions"])

            def captions(rows: list[int], rng: np.random.Generator) -> list[str]:
                return [fixed[i] for i in rows]

            data.update(captions=captions, thresholds={}, corpus=fixed)
        return data

    def model(self, ctx: RunContext, data: dict[str, Any]) -> nn.Module:
        text_encoder = text_encoder_for_training(ctx, data["corpus"])
        return self.build_method(ctx.cfg, text_encoder, build_encoder(ctx.cfg, data["channels"], data["size"]))

    def build_method(self, cfg: Config, text_encoder: Any, image_encoder: nn.Module | None = None) -> nn.Module:
        from contrastkit.methods.registry import get_method

        assert image_encoder is not None
        return get_method(cfg.method.name, self.name).build(cfg.method, image_encoder=image_encoder, text_encoder=text_encoder)

    def loader(self, ctx: RunContext, data: dict[str, Any], model: nn.Module) -> Any:
        from contrastkit.data.image import build_augmentation
        from contrastkit.data.text.loader import ImageTextLoader

        cfg = ctx.cfg
        spec = cfg.data.augment if cfg.data.augment is not None else DEFAULT_AUGMENT
        augmentation = build_augmentation(
            spec, size=data["size"], channels=data["channels"], mean=data["mean"], std=data["std"]
        )
        loader = ImageTextLoader(
            data["images"], data["captions"], self.text_tower(model).tokenize, batch_size=ctx.local_batch,
            augmentation=augmentation.to(ctx.device), seed=cfg.train.seed, device=ctx.device,
            channels_last=cfg.train.channels_last, rank=ctx.rank, world_size=ctx.world_size,
        )
        if cfg.train.channels_last:
            cast(Any, model).encoder.to(memory_format=torch.channels_last)
        self.write_meta(ctx, data)
        return loader

    def describe(self, ctx: RunContext, data: dict[str, Any]) -> str:
        return (
            f"training {ctx.cfg.method.name} on {data['images'].shape[0]} image–caption pairs with text "
            f"encoder {ctx.cfg.text.encoder} on {ctx.device}"
        )

    def meta(self, ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
        keys = ("channels", "size", "mean", "std", "classes", "thresholds")
        return {"task": self.name, **{k: data[k] for k in keys}}

    def text_tower(self, model: nn.Module) -> Any:
        return cast(Any, model).text_encoder

    def after_training(self, ctx: RunContext, data: Any, model: nn.Module, summary: TrainSummary) -> dict[str, Any]:
        super().after_training(ctx, data, model, summary)
        if ctx.is_main:
            save_safetensors(cast(Any, model).encoder.state_dict(), ctx.run_dir / "encoder.safetensors")
        return {}

    def image_tower(self, run_dir: Path, cfg: Config) -> nn.Module | None:
        meta = read_meta(run_dir)
        return build_encoder(cfg, int(meta["channels"]), int(meta["size"]))

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def encode_texts(self, model: nn.Module, texts: list[str], *, batch_size: int = 256) -> Tensor:
        """Projected text-tower embeddings (N, D) on the CPU."""
        m = cast(Any, model)
        device = next(model.parameters()).device
        chunks = []
        for start in range(0, len(texts), batch_size):
            enc = m.text_encoder.tokenize(texts[start : start + batch_size])
            chunks.append(m.embed_texts(enc["input_ids"].to(device), enc["attention_mask"].to(device)).float().cpu())
        return torch.cat(chunks)

    def evaluate_model(self, model: nn.Module, cfg: Config, meta: dict[str, Any], batch_size: int) -> dict[str, Any]:
        """Zero-shot accuracy from prompt templates and image↔text retrieval @ K."""
        from contrastkit.data.text.captions import CaptionMaker, prompts
        from contrastkit.evaluate.retrieval import retrieval_metrics

        t: TextConfig = cfg.text
        out: dict[str, Any] = {}
        data = image_text_data(cfg, "test")
        if not data:
            return out
        images: Tensor = data["images"]
        zi = torch.nn.functional.normalize(encode_images(model, meta, images, batch_size=batch_size), dim=1)
        if data["labels"] is not None:
            labels: Tensor = data["labels"]
            classes = data["classes"]
            texts = prompts(classes, t.zero_shot_templates)
            flat = [p for group in texts for p in group]
            zt = torch.nn.functional.normalize(self.encode_texts(model, flat, batch_size=batch_size), dim=1)
            class_emb = torch.nn.functional.normalize(zt.view(len(classes), len(texts[0]), -1).mean(1), dim=1)
            pred = (zi @ class_emb.T).argmax(1)
            out["zero_shot"] = {
                "accuracy": float((pred == labels).float().mean()),
                "num_samples": int(labels.shape[0]),
                "num_classes": len(classes),
                "prompts": texts[0],
            }
            gen = torch.Generator().manual_seed(cfg.train.seed)
            rows = torch.randperm(images.shape[0], generator=gen)[: min(RETRIEVAL_IMAGES, images.shape[0])].tolist()
            maker = CaptionMaker.for_images(images, labels, classes, t.caption_templates, meta.get("thresholds") or None)
            captions = maker.fixed(rows, t.caption_templates[-1])
            query_images = zi[torch.tensor(rows)]
        else:
            captions = list(data["captions"])
            rows = list(range(len(captions)))
            query_images = zi
        unique = list(dict.fromkeys(captions))
        cid = {c: i for i, c in enumerate(unique)}
        caption_of = torch.tensor([cid[c] for c in captions])
        zc = self.encode_texts(model, unique, batch_size=batch_size)
        out["image_to_text"] = {**retrieval_metrics(query_images, zc, caption_of, ks=t.recall_k), "corpus": len(unique)}
        images_of = [torch.nonzero(caption_of == j).flatten().tolist() for j in range(len(unique))]
        out["text_to_image"] = {**retrieval_metrics(zc, query_images, images_of, ks=t.recall_k), "corpus": len(rows)}
        return out

    # ------------------------------------------------------------------ embeddings and search

    def embed_items(
        self, run_dir: Path, cfg: Config, spec: str, *, batch_size: int = 256, unique: bool = False
    ) -> tuple[np.ndarray, list[dict[str, Any]], str]:
        """Texts of a text spec, or images of an image spec, in the shared space."""
        if is_text_spec(spec):
            return super().embed_items(run_dir, cfg, spec, batch_size=batch_size, unique=unique)
        from contrastkit.tasks.runner import setup_runtime

        model = self.trained_model(run_dir, cfg, setup_runtime(cfg, distributed=False))
        meta = read_meta(run_dir)
        data = images_for_spec(cfg, spec, int(meta["size"]))
        if data.channels != int(meta["channels"]):
            raise UserError(f"data {spec!r} has {data.channels} channel(s) but the run was trained on {meta['channels']}")
        z = encode_images(model, meta, data.images, batch_size=batch_size)
        items: list[dict[str, Any]] = []
        for i in range(data.images.shape[0]):
            item: dict[str, Any] = {"image": f"{spec}#{i}"}
            if data.labels is not None and data.classes:
                item["label"] = data.classes[int(data.labels[i])]
            items.append(item)
        return z.numpy(), items, "image"

    def gallery_spec(self, cfg: Config) -> str | None:
        """The test images of a labelled data set for ``contrastkit serve`` (none from a table)."""
        return None if cfg.text.train_file else gallery_spec(cfg)

    def encode_query(self, run_dir: Path, cfg: Config, query: str) -> tuple[np.ndarray, str]:
        """A text query through the text tower, an image file through the image tower."""
        from contrastkit.index.search import is_image_query, read_query_image
        from contrastkit.tasks.runner import setup_runtime

        if not is_image_query(query):
            return super().encode_query(run_dir, cfg, query)
        model = for_queries(run_dir, "trained", lambda: self.trained_model(run_dir, cfg, setup_runtime(cfg, distributed=False)))
        meta = read_meta(run_dir)
        x = read_query_image(query, int(meta["channels"]), int(meta["size"]))
        return encode_images(model, meta, x).numpy(), "image"
