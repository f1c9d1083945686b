"""Decoding image files (placeholder until the data/image split lands)."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from contrastkit.errors import UserError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")


def is_image_file(path: str) -> bool:
    p = Path(path)
    try:
        return p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    except (OSError, ValueError):
        return False


def read_image_file(path: str, channels: int, size: int) -> Tensor:
    from torchvision.io import ImageReadMode, decode_image

    from contrastkit.data.image.datasets import resize_uint8

    try:
        img = decode_image(path, mode=ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY)
    except Exception as exc:
        raise UserError(f"cannot read query image {path!r}: {exc}") from None
    return resize_uint8(img[None], size)
