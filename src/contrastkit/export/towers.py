"""The trained towers of a run, on the CPU, as `contrastkit embed` computes with them.

An exporter gets an :class:`ImageTower` or a :class:`TextTower`: the network (the run's last
checkpoint, as `embed` loads it), the input conventions (size, channels, mean / std; tokenizer and
pooling), a few sample inputs from the run's own data where that is cheap, and ``reference``:
the features of those inputs through the very code path of `contrastkit embed`. Every format
checks its output against ``reference``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from contrastkit.config import Config
from contrastkit.errors import UserError

TOLERANCE = 1e-4  # max abs difference (float32) an exported model may have from `embed`
SAMPLE_IMAGES = 8
SAMPLE_TEXTS = [  # appended to the run's own texts: different lengths, so batches are padded
    "a short one",
    "a rather longer sentence, with punctuation and words the vocabulary may not know: zyzzyva!",
]


def check_parity(what: str, got: Any, want: Tensor) -> float:
    """The max abs difference of ``got`` from `embed`'s ``want``; a one-line error above TOLERANCE."""
    got_t = torch.as_tensor(got, dtype=torch.float32)
    if tuple(got_t.shape) != tuple(want.shape):
        raise UserError(f"{what}: output shape {tuple(got_t.shape)} differs from embed's {tuple(want.shape)}")
    diff = float((got_t - want.float()).abs().max()) if want.numel() else 0.0
    if not diff <= TOLERANCE:  # NaN fails too
        raise UserError(f"{what}: max abs difference from contrastkit embed {diff:.2e} > {TOLERANCE:g}; the export is wrong")
    return diff


@dataclass
class ImageTower:
    """An image encoder (+ the image_text projection) and how `embed` feeds it."""

    encoder: nn.Module  # the run's encoder: normalised (B, C, size, size) → (B, out_dim)
    proj: nn.Linear | None  # image_text: the linear projection into the shared space
    arch: str  # model.encoder of the run (small_resnet, convnet5, resnet18, resnet50)
    cifar_stem: bool
    channels: int
    size: int
    mean: list[float]
    std: list[float]
    samples: Tensor  # uint8 (N, C, size, size)
    reference: Callable[[Tensor], Tensor]  # uint8 images → features, as `contrastkit embed`

    @property
    def out_dim(self) -> int:
        return int(self.proj.out_features) if self.proj is not None else int(cast(Any, self.encoder).out_dim)

    def pixels_model(self) -> nn.Module:
        """pixels in [0, 1] (B, C, size, size) → features: the normalisation built in."""
        return _FromPixels(self.encoder, self.proj, self.mean, self.std).eval()


class _FromPixels(nn.Module):
    def __init__(self, encoder: nn.Module, proj: nn.Linear | None, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.encoder = encoder
        self.proj = proj if proj is not None else nn.Identity()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: Tensor) -> Tensor:
        out: Tensor = self.proj(self.encoder((pixels - self.get_buffer("mean")) / self.get_buffer("std")))
        return out


@dataclass
class TextTower:
    """A text encoder (transformer + pooling, + the image_text projection) and its tokenizer."""

    encoder: Any  # contrastkit.encoders.text.TextEncoder: tokenize(texts); forward(ids, mask) → pooled
    proj: nn.Linear | None
    pooling: str
    max_length: int
    samples: list[str]
    reference: Callable[[list[str]], Tensor]  # texts → features, as `contrastkit embed`

    @property
    def out_dim(self) -> int:
        return int(self.proj.out_features) if self.proj is not None else int(self.encoder.out_dim)

    def ids_model(self) -> nn.Module:
        """(input_ids, attention_mask) → features (pooled, projected where the run projects)."""
        return _FromIds(self.encoder, self.proj).eval()


class _FromIds(nn.Module):
    def __init__(self, encoder: nn.Module, proj: nn.Linear | None) -> None:
        super().__init__()
        self.encoder = encoder
        self.proj = proj if proj is not None else nn.Identity()

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        out: Tensor = self.proj(self.encoder(input_ids, attention_mask))
        return out


# ----------------------------------------------------------------------------- loading


def _cpu(cfg: Config) -> Config:
    cfg.train.device = "cpu"  # exports are written and checked on the CPU
    return cfg


def image_tower(run_dir: Path, cfg: Config) -> ImageTower:
    """The image tower of an image or image_text run."""
    if cfg.task == "image":
        return _image_run(run_dir, _cpu(cfg))
    if cfg.task == "image_text":
        return _image_text_run(run_dir, _cpu(cfg))
    raise UserError(f"run task {cfg.task!r} has no image encoder")


def _image_run(run_dir: Path, cfg: Config) -> ImageTower:
    from contrastkit.evaluate.features import extract_features
    from contrastkit.tasks.image import _Reference

    ref = _Reference(run_dir, cfg)
    encoder = ref.encoder().eval()
    transform = cast(Any, ref.transform)

    def reference(images: Tensor) -> Tensor:
        return extract_features(encoder, images, ref.transform, batch_size=512, device="cpu")

    return ImageTower(
        encoder=encoder, proj=None, arch=cfg.model.encoder, cifar_stem=cfg.model.cifar_stem,
        channels=ref.train.channels, size=ref.size,
        mean=transform.get_buffer("mean").tolist(), std=transform.get_buffer("std").tolist(),
        samples=ref.train.images[:SAMPLE_IMAGES].clone(), reference=reference,
    )


def _image_text_run(run_dir: Path, cfg: Config) -> ImageTower:
    from contrastkit.tasks import get_task
    from contrastkit.tasks.image_text import encode_images
    from contrastkit.tasks.text import read_meta

    model = cast(Any, get_task(cfg.task)).trained_model(run_dir, cfg, torch.device("cpu"))
    meta = read_meta(run_dir)
    channels, size = int(meta["channels"]), int(meta["size"])
    if cfg.text.train_file:  # images of a table: random pixels rather than decoding the table
        gen = torch.Generator().manual_seed(0)
        samples = torch.randint(0, 256, (SAMPLE_IMAGES, channels, size, size), generator=gen, dtype=torch.uint8)
    else:
        from contrastkit.tasks.image import load_split

        samples = load_split(cfg, "train").images[:SAMPLE_IMAGES].clone()

    def reference(images: Tensor) -> Tensor:
        return encode_images(model, meta, images)

    return ImageTower(
        encoder=model.encoder, proj=model.image_proj, arch=cfg.model.encoder, cifar_stem=cfg.model.cifar_stem,
        channels=channels, size=size, mean=[float(m) for m in meta["mean"]], std=[float(s) for s in meta["std"]],
        samples=samples, reference=reference,
    )


def text_tower(run_dir: Path, cfg: Config) -> TextTower:
    """The text tower of a text or image_text run."""
    from contrastkit.tasks import get_task

    if cfg.task not in ("text", "image_text"):
        raise UserError(f"run task {cfg.task!r} has no text encoder")
    task = cast(Any, get_task(cfg.task))
    model = task.trained_model(run_dir, _cpu(cfg), torch.device("cpu"))
    encoder = task.text_tower(model)
    proj = model.text_proj if cfg.task == "image_text" else None

    def reference(texts: list[str]) -> Tensor:
        out: Tensor = task.encode_texts(model, texts)
        return out

    return TextTower(
        encoder=encoder, proj=proj, pooling=encoder.pooling, max_length=encoder.max_length,
        samples=_sample_texts(run_dir, cfg), reference=reference,
    )


def _sample_texts(run_dir: Path, cfg: Config) -> list[str]:
    """Up to 14 texts of the run (training texts where its file can still be read; an image_text
    run on a labelled data set: its zero-shot prompts) and two of ours."""
    from contrastkit.data.text.captions import prompts
    from contrastkit.data.text.corpus import read_sentences
    from contrastkit.tasks.text import read_meta

    t = cfg.text
    columns = t.train_columns[1:] if cfg.task == "image_text" else t.train_columns  # not the image column
    try:
        if t.train_file:
            own = read_sentences(t.train_file, columns, t.train_filter, data_root=t.data_root, limit=14)
        else:
            own = [p for group in prompts(read_meta(run_dir).get("classes") or [], t.zero_shot_templates) for p in group]
    except (UserError, OSError, ValueError):
        own = []
    return own[:14] + SAMPLE_TEXTS
