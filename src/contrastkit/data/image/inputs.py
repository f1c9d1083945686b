"""What a user hands an image run to encode (``Run.encode``), as the uint8 batch the run's
encoder takes: (N, channels, size, size).

Accepted, alone or in a list: image file paths (decoded as queries are, see
:func:`~contrastkit.data.image.decode.read_image_file`), PIL images, numpy arrays in the layout
of PIL and OpenCV — (H, W), (H, W, C) or (N, H, W[, C]) — and torch tensors in torch's layout —
(H, W), (C, H, W) or (N, C, H, W). Pixels are uint8 (0–255) or floats in [0, 1]; alpha is
dropped, gray is repeated to RGB or RGB turned gray as the run needs, and images of another
size are resized (bilinear, antialiased, not cropped) to the run's size. What the run then does
— scaling to [0, 1], its normalisation — is the encoder's own, as in training and evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrastkit.data.image.decode import read_image_file, resize_uint8
from contrastkit.errors import UserError

ACCEPTED = (
    "image file paths, PIL images, numpy arrays (H, W[, C]) / (N, H, W[, C]) or tensors (C, H, W) / (N, C, H, W)"
)


def as_image_batch(images: Any, channels: int, size: int) -> Tensor:
    """``images`` (see the module) as uint8 (N, ``channels``, ``size``, ``size``) on the CPU."""
    if isinstance(images, str | Path):
        return read_image_file(images, channels, size)
    if _is_pil(images):
        return _fit(_pil_tensor(images, channels), channels, size)
    if isinstance(images, Tensor):
        return _fit(_uint8(_tensor_batch(images)), channels, size)
    if isinstance(images, np.ndarray):
        return _fit(_uint8(_array_batch(images)), channels, size)
    if isinstance(images, list | tuple):
        if not images:
            raise UserError("nothing to encode: the list of images is empty")
        return torch.cat([as_image_batch(image, channels, size) for image in images])
    raise UserError(f"cannot encode a {type(images).__name__} as images; give {ACCEPTED}")


def _is_pil(obj: Any) -> bool:
    return type(obj).__module__.startswith("PIL.") and hasattr(obj, "convert")


def _pil_tensor(image: Any, channels: int) -> Tensor:
    from torchvision.transforms.functional import pil_to_tensor

    return pil_to_tensor(image.convert("L" if channels == 1 else "RGB")).unsqueeze(0)


def _tensor_batch(t: Tensor) -> Tensor:
    if t.dim() == 2:
        return t[None, None]
    if t.dim() == 3:
        return t[None]
    if t.dim() == 4:
        return t
    raise UserError(f"an image tensor is (H, W), (C, H, W) or (N, C, H, W); got shape {tuple(t.shape)}")


def _array_batch(a: np.ndarray) -> Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    if t.dim() == 2:  # one gray image
        return t[None, None]
    if t.dim() == 3:  # one (H, W, C) image, or a batch of gray (N, H, W) ones
        return t.permute(2, 0, 1)[None] if t.shape[-1] in (1, 3, 4) else t[:, None]
    if t.dim() == 4:
        return t.permute(0, 3, 1, 2)
    raise UserError(f"an image array is (H, W), (H, W, C) or (N, H, W[, C]); got shape {tuple(a.shape)}")


def _uint8(t: Tensor) -> Tensor:
    """uint8 pixels as they are; floats must be in [0, 1]; other integers in [0, 255]."""
    t = t.detach().cpu()
    if t.dtype == torch.uint8:
        return t
    if t.numel() == 0:
        raise UserError("nothing to encode: the images are empty")
    low, high = float(t.min()), float(t.max())
    if t.is_floating_point():
        if low < 0 or high > 1:
            raise UserError(f"float images must be in [0, 1]; these range over [{low:g}, {high:g}]")
        return (t.float() * 255).round_().to(torch.uint8)
    if t.dtype == torch.bool or low < 0 or high > 255:
        raise UserError(f"integer images must be in [0, 255]; these are {t.dtype} in [{low:g}, {high:g}]")
    return t.to(torch.uint8)


def _fit(batch: Tensor, channels: int, size: int) -> Tensor:
    """Drop alpha, match the channels, resize to size × size."""
    c = batch.shape[1]
    if c not in (1, 3, 4):
        raise UserError(f"images have 1 (gray), 3 (RGB) or 4 (RGBA) channels; got {c} (shape {tuple(batch.shape)})")
    color = batch[:, :3] if c >= 3 else batch
    if channels == 1 and color.shape[1] == 3:
        from torchvision.transforms.v2.functional import rgb_to_grayscale

        color = rgb_to_grayscale(color)
    elif channels == 3 and color.shape[1] == 1:
        color = color.expand(-1, 3, -1, -1)
    if color.shape[-2:] != (size, size):
        color = resize_uint8(color.contiguous(), size)
    return color.contiguous()
