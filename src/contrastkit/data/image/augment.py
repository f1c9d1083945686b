"""Augmentation recipes: a list of ops such as [{op: horizontal_flip, p: 0.5}, ...] parsed into a
`BatchAugmentation` (uint8 or float (B, C, H, W) → augmented, normalised views), the SimCLR-style
default recipes, and the deterministic evaluation transform.

The batched ops themselves live in `contrastkit.data.image.ops`; their names are importable from
here as well.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from contrastkit.data.image.ops import (
    BatchOp,
    ColorJitter,
    GaussianBlur,
    GaussianNoise,
    GeometricWarp,
    Params,
    RandomGrayscale,
    Solarize,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    normalize,
    resize,
    to_float,
)
from contrastkit.errors import UserError, check_choice, closest

__all__ = [
    "AUGMENTATIONS",
    "GEOMETRIC",
    "BatchAugmentation",
    "BatchOp",
    "ColorJitter",
    "EvalTransform",
    "GaussianBlur",
    "GaussianNoise",
    "GeometricWarp",
    "Params",
    "RandomGrayscale",
    "Solarize",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "build_augmentation",
    "default_augmentation",
    "eval_transform",
    "normalize",
]

AUGMENTATIONS: tuple[str, ...] = (
    "random_resized_crop",
    "horizontal_flip",
    "rotation",
    "color_jitter",
    "random_grayscale",
    "gaussian_blur",
    "solarize",
    "gaussian_noise",
)
GEOMETRIC: tuple[str, ...] = ("random_resized_crop", "horizontal_flip", "rotation")


# ----------------------------------------------------------------------------- modules


class BatchAugmentation(nn.Module):
    """A recipe of batched ops: uint8 or [0, 1] float (B, C, H, W) → normalised (B, C, size, size).

    Built by :func:`build_augmentation` from a recipe list; ``augment(images, generator)`` draws
    fresh parameters for every image (on the generator's device), so two calls give two views
    and the same generator seed gives the same views. Public as :mod:`contrastkit.augment`.
    """

    def __init__(
        self, ops: Sequence[BatchOp], *, size: int, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        self.size = size
        warps = [op for op in ops if isinstance(op, GeometricWarp)]
        self.ops: list[BatchOp] = (warps or [GeometricWarp(size)]) + [
            op for op in ops if not isinstance(op, GeometricWarp)
        ]
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32), persistent=False
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32), persistent=False)

    def sample_params(
        self,
        shape: Sequence[int],
        device: torch.device | str,
        generator: torch.Generator | None = None,
    ) -> list[Params]:
        """Draw every op's params for an input batch shape; drawn on the generator's device."""
        device = torch.device(device)
        draw_on = generator.device if generator is not None else device
        shape = tuple(shape)
        all_params = []
        for op in self.ops:
            params = op.sample(shape, draw_on, generator)
            if draw_on != device:
                params = {k: v.to(device, non_blocking=True) for k, v in params.items()}
            all_params.append(params)
            shape = op.out_shape(shape)
        return all_params

    def apply_params(self, images: Tensor, params: Sequence[Params]) -> Tensor:
        """Apply the ops with given params (deterministic), then normalise."""
        x = to_float(images)
        for op, p in zip(self.ops, params, strict=True):
            x = op.apply(x, p)
        mean = self.get_buffer("mean")
        std = self.get_buffer("std")
        return normalize(
            x, mean.to(device=x.device, dtype=x.dtype), std.to(device=x.device, dtype=x.dtype)
        )

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch with fresh per-sample random params."""
        channels = self.get_buffer("mean").shape[0]
        if images.dim() != 4 or images.shape[1] != channels:
            raise UserError(
                f"augmentation expects (B, {channels}, H, W) images, got {tuple(images.shape)}"
            )
        return self.apply_params(images, self.sample_params(images.shape, images.device, generator))

    def extra_repr(self) -> str:
        return f"size={self.size}, ops={self.ops}"


class EvalTransform(nn.Module):
    """Deterministic: uint8/float (B, C, H, W) or (C, H, W) → resized to size, normalised."""

    def __init__(self, *, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.size = size
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32), persistent=False
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        single = images.dim() == 3
        x = resize(to_float(images[None] if single else images), self.size)
        mean = self.get_buffer("mean").to(device=x.device, dtype=x.dtype)
        std = self.get_buffer("std").to(device=x.device, dtype=x.dtype)
        out = normalize(x, mean, std)
        return out[0] if single else out


def eval_transform(
    *, size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Tensor], Tensor]:
    """The evaluation transform: uint8 → float, resize to size (antialiased), normalise."""
    _check_size(size)
    m, s = _check_stats(mean, std, None)
    return EvalTransform(size=size, mean=m, std=s)


# ----------------------------------------------------------------------------- recipe parsing

_ALLOWED: dict[str, tuple[str, ...]] = {
    "random_resized_crop": ("scale", "ratio", "p"),
    "horizontal_flip": ("p",),
    "rotation": ("degrees", "p"),
    "color_jitter": ("brightness", "contrast", "saturation", "hue", "random_order", "p"),
    "random_grayscale": ("p",),
    "gaussian_blur": ("sigma", "kernel_size", "p"),
    "solarize": ("threshold", "p"),
    "gaussian_noise": ("std", "clip", "p"),
}
_DEFAULT_P: dict[str, float] = {
    "random_resized_crop": 1.0,
    "horizontal_flip": 0.5,
    "rotation": 1.0,
    "color_jitter": 1.0,
    "random_grayscale": 0.1,
    "gaussian_blur": 1.0,
    "solarize": 0.5,
    "gaussian_noise": 1.0,
}


def _num(op: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"augmentation {op}: {key} must be a number, got {value!r}")
    return float(value)


def _pair(op: str, key: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise UserError(f"augmentation {op}: {key} must be a pair [low, high], got {value!r}")
    lo, hi = _num(op, key, value[0]), _num(op, key, value[1])
    if lo > hi:
        raise UserError(f"augmentation {op}: {key} must have low <= high, got {value!r}")
    return lo, hi


def _prob(op: str, value: Any) -> float:
    p = _num(op, "p", value)
    if not 0.0 <= p <= 1.0:
        raise UserError(f"augmentation {op}: p must be in [0, 1], got {value!r}")
    return p


def _bool(op: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"augmentation {op}: {key} must be true or false, got {value!r}")
    return value


def _jitter_range(key: str, value: Any) -> tuple[float, float] | None:
    """brightness/contrast/saturation: v → [max(0, 1 − v), 1 + v] or an explicit [lo, hi] ≥ 0."""
    if isinstance(value, list | tuple):
        lo, hi = _pair("color_jitter", key, value)
        if lo < 0:
            raise UserError(f"color_jitter: {key} range must be >= 0, got {value!r}")
    else:
        v = _num("color_jitter", key, value)
        if v < 0:
            raise UserError(f"color_jitter: {key} must be >= 0, got {value!r}")
        lo, hi = max(0.0, 1.0 - v), 1.0 + v
    return None if lo == hi == 1.0 else (lo, hi)


def _hue_range(value: Any) -> tuple[float, float] | None:
    """hue: h in [0, 0.5] → [−h, h], or an explicit [lo, hi] inside [−0.5, 0.5]."""
    if isinstance(value, list | tuple):
        lo, hi = _pair("color_jitter", "hue", value)
    else:
        h = _num("color_jitter", "hue", value)
        lo, hi = -h, h
    if not -0.5 <= lo <= hi <= 0.5:
        raise UserError(
            f"color_jitter: hue must be in [0, 0.5] (or a range in [-0.5, 0.5]), got {value!r}"
        )
    return None if lo == hi == 0.0 else (lo, hi)


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise UserError(f"augmentation size must be a positive integer, got {size!r}")


def _check_stats(
    mean: Sequence[float], std: Sequence[float], channels: int | None
) -> tuple[list[float], list[float]]:
    m = [float(v) for v in mean]
    s = [float(v) for v in std]
    if len(m) != len(s) or (channels is not None and len(m) != channels):
        raise UserError(
            f"normalisation mean {m} and std {s} must each have one value per channel "
            f"({channels if channels is not None else len(m)})"
        )
    if any(v <= 0 for v in s):
        raise UserError(f"normalisation std must be > 0, got {s}")
    return m, s


def build_augmentation(
    spec: list[dict[str, Any]],
    *,
    size: int,
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> BatchAugmentation:
    """Build a batched augmentation from a recipe list such as [{op: horizontal_flip, p: 0.5}, ...].

    Crop, flip and rotation are fused and run first (whatever their place in the list), then the
    other ops in order, then normalisation with `mean`/`std`. Ops with p = 0 are dropped.
    """
    _check_size(size)
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise UserError(f"augmentation channels must be a positive integer, got {channels!r}")
    m, s = _check_stats(mean, std, channels)
    if not isinstance(spec, list | tuple):
        raise UserError(f"augmentation recipe must be a list of ops, got {spec!r}")
    crop: tuple[tuple[float, float], tuple[float, float], float] | None = None
    flip_p = 0.0
    rotation: tuple[tuple[float, float], float] | None = None
    seen: set[str] = set()
    ops: list[BatchOp] = []
    for entry in spec:
        item = {"op": entry} if isinstance(entry, str) else entry
        if not isinstance(item, dict) or "op" not in item:
            raise UserError(
                f"each augmentation must be a mapping with an 'op' key (one of {', '.join(AUGMENTATIONS)}), got {entry!r}"
            )
        name = item["op"]
        if name in ("normalize", "normalise"):
            raise UserError(
                "augmentation 'normalize' is not an op: normalisation with the data set mean/std is always applied last"
            )
        check_choice("augmentation op", str(name), AUGMENTATIONS)
        for key in item:
            if key != "op" and key not in _ALLOWED[name]:
                raise UserError(
                    f"unknown parameter {key!r} for augmentation {name}{closest(str(key), _ALLOWED[name])}; "
                    f"allowed: {', '.join(_ALLOWED[name])}"
                )
        if name in GEOMETRIC and name in seen:
            raise UserError(f"augmentation {name} is given twice; give it once")
        seen.add(name)
        p = _prob(name, item.get("p", _DEFAULT_P[name]))
        if name == "random_resized_crop":
            scale = _pair(name, "scale", item.get("scale", [0.08, 1.0]))
            ratio = _pair(name, "ratio", item.get("ratio", [3 / 4, 4 / 3]))
            if not 0.0 < scale[0] <= scale[1] <= 1.0:
                raise UserError(
                    f"augmentation {name}: scale must satisfy 0 < low <= high <= 1, got {list(scale)}"
                )
            if ratio[0] <= 0:
                raise UserError(
                    f"augmentation {name}: ratio must satisfy 0 < low <= high, got {list(ratio)}"
                )
            crop = (scale, ratio, p) if p > 0 else None
            continue
        if name == "horizontal_flip":
            flip_p = p
            continue
        if name == "rotation":
            degrees = item.get("degrees", 15.0)
            if isinstance(degrees, list | tuple):
                deg = _pair(name, "degrees", degrees)
            else:
                d = _num(name, "degrees", degrees)
                if d < 0:
                    raise UserError(f"augmentation rotation: degrees must be >= 0, got {degrees!r}")
                deg = (-d, d)
            rotation = (deg, p) if p > 0 and deg != (0.0, 0.0) else None
            continue
        op = _build_pointwise(name, item, p, size, channels)
        if op is not None and p > 0:
            ops.append(op)
    warp = GeometricWarp(size, crop=crop, flip_p=flip_p, rotation=rotation)
    return BatchAugmentation([warp, *ops], size=size, mean=m, std=s)


def _build_pointwise(
    name: str, item: dict[str, Any], p: float, size: int, channels: int
) -> BatchOp | None:
    """The non-geometric ops; None where the op does nothing for these images."""
    if name == "color_jitter":
        ranges = {
            key: _jitter_range(key, item.get(key, 0.0))
            for key in ("brightness", "contrast", "saturation")
        }
        hue = _hue_range(item.get("hue", 0.0))
        if channels != 3 and (ranges["saturation"] is not None or hue is not None):
            raise UserError(
                f"color_jitter: saturation and hue need RGB images (channels=3), got channels={channels}; "
                "set them to 0 or leave them out"
            )
        if all(r is None for r in ranges.values()) and hue is None:
            return None
        return ColorJitter(
            brightness=ranges["brightness"],
            contrast=ranges["contrast"],
            saturation=ranges["saturation"],
            hue=hue,
            random_order=_bool(name, "random_order", item.get("random_order", False)),
            p=p,
        )
    if name == "random_grayscale":
        return RandomGrayscale(p) if channels == 3 else None
    if name == "gaussian_blur":
        sigma_value = item.get("sigma", [0.1, 2.0])
        if isinstance(sigma_value, list | tuple):
            sigma = _pair(name, "sigma", sigma_value)
        else:
            v = _num(name, "sigma", sigma_value)
            sigma = (v, v)
        if sigma[0] <= 0:
            raise UserError(f"augmentation gaussian_blur: sigma must be > 0, got {sigma_value!r}")
        default_k = max(3, int(0.1 * size) // 2 * 2 + 1)  # SimCLR: about 10 % of the image side
        k = item.get("kernel_size", min(default_k, 2 * size - 1))
        if isinstance(k, bool) or not isinstance(k, int) or k < 3 or k % 2 == 0 or k > 2 * size - 1:
            raise UserError(
                f"augmentation gaussian_blur: kernel_size must be an odd integer in [3, {2 * size - 1}], got {k!r}"
            )
        return GaussianBlur(sigma, k, p)
    if name == "solarize":
        t = _num(name, "threshold", item.get("threshold", 0.5))
        if not 0.0 <= t <= 1.0:
            raise UserError(f"augmentation solarize: threshold must be in [0, 1], got {t}")
        return Solarize(t, p)
    # gaussian_noise
    std_value = item.get("std", 0.05)
    if isinstance(std_value, list | tuple):
        std = _pair(name, "std", std_value)
    else:
        v = _num(name, "std", std_value)
        std = (v, v)
    if std[0] < 0:
        raise UserError(f"augmentation gaussian_noise: std must be >= 0, got {std_value!r}")
    if std[1] == 0:
        return None
    return GaussianNoise(std, _bool(name, "clip", item.get("clip", True)), p)


def default_augmentation(channels: int, size: int) -> list[dict[str, Any]]:
    """SimCLR-style defaults: strong crop/flip/jitter/grayscale (+ blur above 32 px) for RGB;
    crop, flip (from 16 px), brightness/contrast and noise for grayscale."""
    if channels == 3:
        ops: list[dict[str, Any]] = [
            {"op": "random_resized_crop", "scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]},
            {"op": "horizontal_flip", "p": 0.5},
            {
                "op": "color_jitter",
                "brightness": 0.4,
                "contrast": 0.4,
                "saturation": 0.4,
                "hue": 0.1,
                "p": 0.8,
            },
            {"op": "random_grayscale", "p": 0.2},
        ]
        if size > 32:
            ops.append({"op": "gaussian_blur", "sigma": [0.1, 2.0], "p": 0.5})
        return ops
    ops = [
        {
            "op": "random_resized_crop",
            "scale": [0.2 if size >= 16 else 0.4, 1.0],
            "ratio": [0.75, 4 / 3],
        }
    ]
    if size >= 16:
        ops.append({"op": "horizontal_flip", "p": 0.5})
    ops += [
        {"op": "color_jitter", "brightness": 0.4, "contrast": 0.4, "p": 0.8},
        {"op": "gaussian_noise", "std": 0.05, "p": 0.5},
    ]
    return ops
