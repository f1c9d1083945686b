"""Captions for image–text training: generated from class names and image attributes for a
labelled image data set (the offline Fashion-MNIST demonstration), or read with their images
from a CSV / JSONL of (image path, caption)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrastkit.errors import UserError

# Several names per Fashion-MNIST class: captions pick one at random, zero-shot prompts use the first.
FASHION_MNIST_NAMES: dict[str, tuple[str, ...]] = {
    "T-shirt/top": ("t-shirt", "short-sleeved top", "tee"),
    "Trouser": ("pair of trousers", "pair of pants", "pair of slacks"),
    "Pullover": ("pullover", "sweater", "jumper"),
    "Dress": ("dress", "frock", "summer dress"),
    "Coat": ("coat", "jacket", "overcoat"),
    "Sandal": ("sandal", "open shoe", "summer sandal"),
    "Shirt": ("shirt", "button-up shirt", "blouse"),
    "Sneaker": ("sneaker", "trainer", "running shoe"),
    "Bag": ("bag", "handbag", "purse"),
    "Ankle boot": ("ankle boot", "boot", "short boot"),
}
TONES: tuple[str, ...] = ("dark", "grey", "light")
SIZES: tuple[str, ...] = ("small", "large")
FIELDS: tuple[str, ...] = ("label", "tone", "size")
_ARTICLE = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")
_FIELD = re.compile(r"{(\w+)}")


def check_templates(templates: Sequence[str], what: str, *, need_label: bool = True) -> None:
    """UserError unless every template only uses {label}, {tone}, {size} (and has {label})."""
    if not templates:
        raise UserError(f"{what} must list at least one template")
    for t in templates:
        fields = _FIELD.findall(t)
        bad = [f for f in fields if f not in FIELDS]
        if bad or (need_label and "label" not in fields):
            raise UserError(
                f"{what}: template {t!r} must contain {{label}} and may use only {{label}}, {{tone}}, {{size}}"
            )


def fill(template: str, **values: str) -> str:
    """Fill a template and fix the article ("a ankle boot" → "an ankle boot")."""
    return _ARTICLE.sub(lambda m: m.group(1) + "n ", template.format(**values))


def class_names(classes: Sequence[str]) -> list[tuple[str, ...]]:
    """Names used in captions for each class (Fashion-MNIST aliases, else the lower-case name)."""
    return [FASHION_MNIST_NAMES.get(c, (c.lower(),)) for c in classes]


@torch.no_grad()
def image_attributes(images: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per image: mean brightness of the foreground (pixels > 10% of full scale) and the
    foreground's share of the image — the raw values behind the {tone} and {size} words."""
    x = images.float().div(255.0).mean(1)  # (N, H, W)
    fg = x > 0.1
    area = fg.float().mean((1, 2))
    tone = (x * fg).sum((1, 2)) / fg.sum((1, 2)).clamp_min(1)
    return tone.cpu().numpy(), area.cpu().numpy()


@dataclass
class CaptionMaker:
    """Captions for a labelled image set from class names, brightness and size.

    ``thresholds`` (tone terciles, size median) come from the training images so that the
    test images are described on the same scale.
    """

    labels: np.ndarray
    names: list[tuple[str, ...]]
    tone: np.ndarray
    area: np.ndarray
    thresholds: dict[str, list[float]]
    templates: list[str]

    @classmethod
    def for_images(
        cls,
        images: Tensor,
        labels: Tensor,
        classes: Sequence[str],
        templates: Sequence[str],
        thresholds: Mapping[str, list[float]] | None = None,
    ) -> CaptionMaker:
        check_templates(templates, "text.caption_templates")
        tone, area = image_attributes(images)
        if thresholds is None:
            thresholds = {
                "tone": [float(q) for q in np.quantile(tone, [1 / 3, 2 / 3])],
                "size": [float(np.median(area))],
            }
        return cls(
            labels.cpu().numpy(), class_names(classes), tone, area, dict(thresholds), list(templates)
        )

    def words(self, i: int) -> dict[str, str]:
        tone = TONES[int(np.searchsorted(self.thresholds["tone"], self.tone[i]))]
        size = SIZES[int(np.searchsorted(self.thresholds["size"], self.area[i]))]
        return {"tone": tone, "size": size}

    def random(self, rows: list[int], rng: np.random.Generator) -> list[str]:
        """A random template and class name per row (training captions)."""
        out = []
        for i in rows:
            names = self.names[int(self.labels[i])]
            template = self.templates[int(rng.integers(0, len(self.templates)))]
            out.append(fill(template, label=names[int(rng.integers(0, len(names)))], **self.words(i)))
        return out

    def fixed(self, rows: Sequence[int], template: str) -> list[str]:
        """One deterministic caption per row (the first class name) for evaluation."""
        return [fill(template, label=self.names[int(self.labels[i])][0], **self.words(i)) for i in rows]


def prompts(classes: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """Zero-shot prompts: for each class, one text per template ("a photo of a {label}")."""
    check_templates(templates, "text.zero_shot_templates")
    for t in templates:
        if _FIELD.findall(t) != ["label"]:
            raise UserError(f"text.zero_shot_templates: template {t!r} must contain {{label}} once and no other field")
    return [[fill(t, label=names[0]) for t in templates] for names in class_names(classes)]


def read_image_captions(
    path: Path, image_column: str, caption_column: str, rows: list[dict[str, str]], *, size: int, rgb: bool = True
) -> tuple[Tensor, list[str]]:
    """Decode the images of (image path, caption) rows (paths relative to the table's folder),
    centre-cropped and resized to size × size; returns uint8 (N, C, size, size) and captions."""
    from torchvision.io import ImageReadMode, decode_image

    from contrastkit.data.image.datasets import resize_uint8

    folder = path.parent
    images: list[Tensor] = []
    captions: list[str] = []
    mode = ImageReadMode.RGB if rgb else ImageReadMode.GRAY
    for number, row in enumerate(rows, 1):
        rel, caption = row.get(image_column, "").strip(), row.get(caption_column, "").strip()
        if not rel or not caption:
            continue
        file = Path(rel) if Path(rel).is_absolute() else folder / rel
        if not file.is_file():
            raise UserError(f"{path}: row {number} names image {rel!r}, which does not exist")
        try:
            img = decode_image(str(file), mode=mode)
        except Exception as exc:  # unreadable or not an image
            raise UserError(f"{path}: row {number}: cannot decode image {rel!r} ({exc})") from None
        h, w = img.shape[1:]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        img = img[:, top : top + side, left : left + side]
        images.append(resize_uint8(img[None], size)[0])
        captions.append(caption)
    if len(images) < 2:
        raise UserError(f"{path}: found {len(images)} (image, caption) row(s); need at least 2")
    return torch.stack(images), captions


def caption_rows_info(images: Tensor) -> dict[str, Any]:
    """Channel statistics of decoded images (for normalisation)."""
    x = images.float().div(255.0)
    return {"mean": x.mean((0, 2, 3)).tolist(), "std": x.std((0, 2, 3)).clamp_min(1e-6).tolist()}
