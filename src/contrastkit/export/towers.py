"""The trained towers of a run, on the CPU, as `contrastkit embed` computes with them.

An exporter gets an :class:`ImageTower` or a :class:`TextTower`, made from a run object that
encodes images or texts (:class:`~contrastkit.tasks.EncodesImages`,
:class:`~contrastkit.tasks.EncodesTexts`): the network (the run's last checkpoint, as `embed`
loads it), the input conventions (size, channels, mean / std; tokenizer and pooling), a few
sample inputs from the run's own data where that is cheap, and ``reference``: the features of
those inputs through the very code path of `contrastkit embed`. Every format checks its output
against ``reference``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from contrastkit.errors import UserError
from contrastkit.tasks import EncodesImages, EncodesTexts, TrainedRun

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


# ----------------------------------------------------------------------------- from a run


def image_tower(run: TrainedRun) -> ImageTower:
    """The image tower of a run that encodes images (open the run on the CPU: exports are
    written and checked there)."""
    if not isinstance(run, EncodesImages):
        raise UserError(f"run task {run.task!r} has no image encoder")
    encoder, proj = run.image_model()
    inp = run.image_input()

    def reference(images: Tensor) -> Tensor:
        return run.encode_images(images)

    return ImageTower(
        encoder=encoder.eval(), proj=cast(Any, proj), arch=inp.arch, cifar_stem=inp.cifar_stem, channels=inp.channels,
        size=inp.size, mean=inp.mean, std=inp.std, samples=run.sample_images(SAMPLE_IMAGES), reference=reference,
    )


def text_tower(run: TrainedRun) -> TextTower:
    """The text tower of a run that encodes texts (opened on the CPU)."""
    if not isinstance(run, EncodesTexts):
        raise UserError(f"run task {run.task!r} has no text encoder")
    encoder, proj = run.text_model()

    def reference(texts: list[str]) -> Tensor:
        return run.encode_texts(texts)

    return TextTower(
        encoder=encoder, proj=cast(Any, proj), pooling=encoder.pooling, max_length=encoder.max_length,
        samples=run.sample_texts()[:14] + SAMPLE_TEXTS, reference=reference,
    )
