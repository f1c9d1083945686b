"""Decoding and resizing images: files and encoded bytes to uint8 tensors.

Every image path of contrastkit decodes here: image folders in memory (``data.name: folder``),
streamed folders, ``contrastkit prepare`` (folders and tar shards) and single image files
(queries). A folder's image is decoded by torchvision (EXIF orientation applied, the first frame
of an animation) into uint8 (C, H, W) with C in 1..4; :func:`resize_center_crop` resizes its
shorter side to S (bilinear, antialiased, rounded to uint8) and centre-crops S × S;
:func:`to_channels` drops alpha and repeats gray to RGB when the collection is colour.

:data:`IMAGE_SUFFIXES` are the suffixes of image files (the ones torchvision decodes);
:data:`PIL_SUFFIXES` are read by PIL, in tar shards only.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.errors import UserError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".gif", ".webp")
PIL_SUFFIXES: tuple[str, ...] = (".ppm", ".bmp")
# PIL modes without colour (a header check, no decoding)
GRAY_MODES: tuple[str, ...] = ("1", "L", "LA", "I", "I;16", "F", "La")
_PIL_ONLY = tuple(s.lstrip(".") for s in PIL_SUFFIXES)
_CHUNK = 4096


# ----------------------------------------------------------------------------- files and bytes


def is_image_file(path: str | Path) -> bool:
    """Whether `path` names an existing file with an image suffix (:data:`IMAGE_SUFFIXES`);
    False for any string that cannot be a file name (e.g. a sentence too long for one)."""
    p = Path(path)
    try:
        return p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    except (OSError, ValueError):
        return False


def read_image_file(path: str | Path, channels: int, size: int) -> Tensor:
    """One image file as uint8 (1, `channels`, `size`, `size`): decoded by torchvision as GRAY
    (channels 1) or RGB (channels 3), the first frame of an animation, resized (not cropped) to
    size × size as :func:`resize_uint8` does (for queries: ``search``, ``serve``). A file that
    cannot be read is a one-line UserError."""
    from torchvision.io import ImageReadMode, decode_image

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (gray) or 3 (RGB), got {channels}")
    try:
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs; they still work
            warnings.simplefilter("ignore", DeprecationWarning)
            img = decode_image(str(path), mode=ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY)
    except Exception as exc:  # torchvision raises RuntimeError, OSError, ValueError, ...
        # the words of ``contrastkit search`` / ``serve`` (their tests match them), on one line
        raise UserError(f"cannot read query image {str(path)!r}: {' '.join(str(exc).split())}") from None
    if img.dim() == 4:  # animated GIF: the first frame
        img = img[0]
    return resize_uint8(img.unsqueeze(0), size)


def decode_file(path: Path) -> Tensor | None:
    """One image file as uint8 (C, H, W) with C in 1..4, or None when it cannot be decoded."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        img = decode_image(
            read_file(str(path)), mode=ImageReadMode.UNCHANGED, apply_exif_orientation=True
        )
    except (RuntimeError, ValueError, OSError):
        return None
    return _checked(img)


def decode_bytes(data: bytes, ext: str) -> Tensor | None:
    """An encoded image (`ext`: its extension without the dot, lower case) as uint8 (C, H, W)
    with C in 1..4 (as :func:`decode_file` gives for a file), or None when it cannot be decoded.
    torchvision first; PIL for PPM and BMP and for what torchvision does not read."""
    img: Tensor | None = None
    if ext not in _PIL_ONLY:
        from torchvision.io import ImageReadMode, decode_image

        try:
            buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs; they still work
                warnings.simplefilter("ignore", DeprecationWarning)
                img = decode_image(buf, mode=ImageReadMode.UNCHANGED, apply_exif_orientation=True)
        except (RuntimeError, ValueError, OSError):
            img = None
    if img is None:
        img = _decode_pil(data)
    if img is None:
        return None
    return _checked(img)


def _checked(img: Tensor) -> Tensor | None:
    """The first frame of an animation; None unless (C, H, W) with C in 1..4 and H, W >= 1."""
    if img.dim() == 4:  # animated GIF: keep the first frame
        img = img[0]
    if img.dim() != 3 or img.shape[0] not in (1, 2, 3, 4) or min(img.shape[1:]) < 1:
        return None
    return img


def _decode_pil(data: bytes) -> Tensor | None:
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as opened:
            im: Image.Image = ImageOps.exif_transpose(opened)
            if im.mode not in ("L", "LA", "RGB", "RGBA"):
                im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except Exception:  # PIL raises many types for a broken file
        return None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def header_colour(path: Path) -> bool | None:
    """Whether the file's header says colour (PIL, no decoding); None when PIL cannot read it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode not in GRAY_MODES
    except Exception:  # PIL raises many types for a broken file
        return None


# ----------------------------------------------------------------------------- resizing


def resize_center_crop(img: Tensor, size: int) -> Tensor:
    """Resize the short side to `size` (antialiased bilinear), then centre-crop to size × size."""
    _, h, w = img.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        resized = F.interpolate(
            img.unsqueeze(0).float(),
            size=(nh, nw),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        img = resized.squeeze(0).round_().clamp_(0, 255).to(torch.uint8)
    top, left = (nh - size) // 2, (nw - size) // 2
    return img[:, top : top + size, left : left + size]


def to_channels(img: Tensor, rgb: bool) -> Tensor:
    """Drop alpha; gray→RGB by repeating when `rgb`, else keep one channel."""
    c = img.shape[0]
    color = img[:3] if c >= 3 else img[:1]
    if rgb:
        return color.expand(3, -1, -1) if color.shape[0] == 1 else color
    return color


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """Resize uint8 (N, C, H, W) images to (size, size), bilinear with antialias, in chunks."""
    out = torch.empty(
        (images.shape[0], images.shape[1], size, size), dtype=torch.uint8, device=images.device
    )
    for start in range(0, images.shape[0], _CHUNK):
        chunk = images[start : start + _CHUNK].float()
        resized = F.interpolate(
            chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out[start : start + _CHUNK] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def decode_chunk(paths: list[str], size: int, rgb: bool) -> tuple[np.ndarray, np.ndarray]:
    """Decode, resize and crop a chunk of files (a task of ``prepare``'s decoding workers);
    (images (k, C, S, S), indices of the files kept)."""
    out: list[np.ndarray] = []
    kept: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for i, p in enumerate(paths):
            img = decode_file(Path(p))
            if img is None:
                continue
            img = to_channels(resize_center_crop(img, size), rgb)
            if not rgb and img.shape[0] == 3:  # the header said gray, the decoder colour
                img = img.float().mean(0, keepdim=True).round_().to(torch.uint8)
            out.append(img.numpy())
            kept.append(i)
    c = 3 if rgb else 1
    stacked = np.stack(out) if out else np.zeros((0, c, size, size), np.uint8)
    return stacked, np.asarray(kept, dtype=np.int64)
