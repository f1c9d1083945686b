"""Batched image augmentations on (B, C, H, W) tensors with per-sample random parameters.

Everything runs on the images' device with no PIL and no per-image Python loop. Crop, flip and
rotation are fused into one affine warp (`F.affine_grid` + `F.grid_sample`). Randomness comes from
an optional `torch.Generator`, so a seeded run is reproducible. Augmentations follow SimCLR
(Chen et al. 2020, arXiv:2002.05709) and torchvision's conventions.

Each op is two steps: `sample(shape, device, generator) -> params` draws every random number for
the batch, `apply(x, params)` is deterministic. Params are tensors whose first dim is the batch,
so slicing them gives the parameters of single samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.errors import UserError, check_choice, closest

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

Params = dict[str, Tensor]
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
_CROP_TRIALS = 10


# ----------------------------------------------------------------------------- small helpers


def _to_float(images: Tensor) -> Tensor:
    """uint8 → float32 in [0, 1]; floating tensors pass through unchanged."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    return images


def _resize(x: Tensor, size: int) -> Tensor:
    """Bilinear, antialiased resize to (size, size); a no-op when already that size."""
    if x.shape[-2] == size and x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _uniform(
    lo: float, hi: float, shape: tuple[int, ...], gen: torch.Generator | None, device: torch.device
) -> Tensor:
    return torch.rand(shape, generator=gen, device=device) * (hi - lo) + lo


def _coin(p: float, batch: int, gen: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.rand(batch, generator=gen, device=device) < p


def _grayscale(x: Tensor) -> Tensor:
    """(B, 3, H, W) RGB → (B, 1, H, W) luma with torchvision's weights."""
    weights = torch.tensor(_GRAY_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _bcast(v: Tensor) -> Tensor:
    """(B,) → (B, 1, 1, 1) for broadcasting over images."""
    return v.view(-1, 1, 1, 1)


def _select(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    return torch.where(_bcast(mask), new, old)


# ----------------------------------------------------------------------------- op base


class BatchOp:
    """One augmentation: draw per-sample params for a batch, then apply them (deterministic)."""

    name: str = ""
    p: float = 1.0

    def sample(
        self, shape: Sequence[int], device: torch.device, gen: torch.Generator | None
    ) -> Params:
        """All random numbers for a batch of the given (B, C, H, W) input shape."""
        raise NotImplementedError

    def apply(self, x: Tensor, params: Params) -> Tensor:
        """Apply the op to float images in [0, 1] with params from `sample`."""
        raise NotImplementedError

    def out_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(shape)

    def _mask(self, batch: int, device: torch.device, gen: torch.Generator | None) -> Params:
        return {} if self.p >= 1.0 else {"apply": _coin(self.p, batch, gen, device)}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class GeometricWarp(BatchOp):
    """Random resized crop, horizontal flip and rotation fused into one affine warp to size × size.

    The output pixel at normalised position q samples the input at C(F(R⁻¹ q)): rotate (about
    the centre, counter-clockwise like torchvision), flip, then crop. Outside the input is 0.
    """

    name = "geometric"

    def __init__(
        self,
        size: int,
        *,
        crop: tuple[tuple[float, float], tuple[float, float], float] | None = None,
        flip_p: float = 0.0,
        rotation: tuple[tuple[float, float], float] | None = None,
    ) -> None:
        self.size = size
        self.crop = crop  # (scale, ratio, p)
        self.flip_p = flip_p
        self.rotation = rotation  # (degrees range, p)

    def out_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return (shape[0], shape[1], self.size, self.size)

    def sample(
        self, shape: Sequence[int], device: torch.device, gen: torch.Generator | None
    ) -> Params:
        batch, _, h, w = shape
        params: Params = {}
        if self.crop is not None:
            params["box"] = self._sample_boxes(batch, h, w, device, gen)
        if self.flip_p > 0:
            params["flip"] = _coin(self.flip_p, batch, gen, device)
        if self.rotation is not None:
            (lo, hi), p = self.rotation
            angle = _uniform(lo, hi, (batch,), gen, device)
            if p < 1.0:
                angle = torch.where(_coin(p, batch, gen, device), angle, torch.zeros_like(angle))
            params["angle"] = angle
        return params

    def _sample_boxes(
        self, batch: int, h: int, w: int, device: torch.device, gen: torch.Generator | None
    ) -> Tensor:
        """(B, 4) crop boxes (centre x, centre y, half-width, half-height) in normalised coords.

        Area fraction uniform in `scale`, aspect ratio log-uniform in `ratio`; like torchvision,
        up to 10 tries per sample (vectorised), then a centred fallback crop.
        """
        assert self.crop is not None
        (s_lo, s_hi), (r_lo, r_hi), p = self.crop
        aspect = w / h
        area = _uniform(s_lo, s_hi, (batch, _CROP_TRIALS), gen, device)
        ratio = torch.exp(
            _uniform(math.log(r_lo), math.log(r_hi), (batch, _CROP_TRIALS), gen, device)
        )
        fw = torch.sqrt(area * ratio / aspect)  # crop width as a fraction of the input width
        fh = torch.sqrt(area / ratio * aspect)
        valid = (fw <= 1.0) & (fh <= 1.0)
        first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)  # first valid try
        found = valid.any(dim=1)
        if aspect < r_lo:
            fb_w, fb_h = 1.0, aspect / r_lo
        elif aspect > r_hi:
            fb_w, fb_h = r_hi / aspect, 1.0
        else:
            fb_w, fb_h = 1.0, 1.0
        fw = torch.where(
            found, fw.gather(1, first).squeeze(1), torch.full_like(found, fb_w, dtype=fw.dtype)
        )
        fh = torch.where(
            found, fh.gather(1, first).squeeze(1), torch.full_like(found, fb_h, dtype=fh.dtype)
        )
        cx = (torch.rand(batch, generator=gen, device=device) * 2 - 1) * (1 - fw)
        cy = (torch.rand(batch, generator=gen, device=device) * 2 - 1) * (1 - fh)
        cx = torch.where(found, cx, torch.zeros_like(cx))
        cy = torch.where(found, cy, torch.zeros_like(cy))
        box = torch.stack([cx, cy, fw, fh], dim=1)
        if p < 1.0:
            identity = torch.tensor([0.0, 0.0, 1.0, 1.0], device=device).expand(batch, 4)
            box = torch.where(_coin(p, batch, gen, device).unsqueeze(1), box, identity)
        return box

    def theta(self, params: Params, batch: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """(B, 2, 3) affine matrices mapping output to input normalised coordinates."""
        box = params.get("box")
        if box is None:
            box = torch.tensor([0.0, 0.0, 1.0, 1.0], device=device).expand(batch, 4)
        cx, cy, fw, fh = box.to(dtype).unbind(1)
        sign = torch.ones(batch, device=device, dtype=dtype)
        if "flip" in params:
            sign = torch.where(params["flip"], -sign, sign)
        if "angle" in params:
            rad = params["angle"].to(dtype) * (math.pi / 180.0)
            cos, sin = torch.cos(rad), torch.sin(rad)
        else:
            cos, sin = torch.ones_like(sign), torch.zeros_like(sign)
        row0 = torch.stack([fw * sign * cos, -fw * sign * sin, cx], dim=1)
        row1 = torch.stack([fh * sin, fh * cos, cy], dim=1)
        return torch.stack([row0, row1], dim=1)

    def apply(self, x: Tensor, params: Params) -> Tensor:
        batch, channels, h, w = x.shape
        if "box" not in params and "angle" not in params:
            # fast path: plain resize, then a per-sample flip selected with where
            out = _resize(x, self.size)
            if "flip" in params:
                out = _select(params["flip"], out.flip(-1), out)
            return out
        theta = self.theta(params, batch, x.device, x.dtype)
        # supersample when shrinking, so large crops are averaged rather than aliased
        k = max(1, min(4, math.ceil(max(h, w) / self.size)))
        grid = F.affine_grid(
            theta, [batch, channels, self.size * k, self.size * k], align_corners=False
        )
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if "angle" in params:  # rotated corners come from outside the image: fill with 0
            inside = (grid.abs().amax(dim=-1) <= 1.0).unsqueeze(1)
            out = out * inside.to(out.dtype)
        if k > 1:
            out = F.avg_pool2d(out, k)
        return out


class ColorJitter(BatchOp):
    """Per-sample brightness, contrast, saturation and hue changes (torchvision semantics)."""

    name = "color_jitter"
    COMPONENTS = ("brightness", "contrast", "saturation", "hue")

    def __init__(
        self,
        *,
        brightness: tuple[float, float] | None,
        contrast: tuple[float, float] | None,
        saturation: tuple[float, float] | None,
        hue: tuple[float, float] | None,
        random_order: bool,
        p: float,
    ) -> None:
        self.ranges = {
            "brightness": brightness,
            "contrast": contrast,
            "saturation": saturation,
            "hue": hue,
        }
        self.random_order = random_order
        self.p = p

    def sample(
        self, shape: Sequence[int], device: torch.device, gen: torch.Generator | None
    ) -> Params:
        batch = shape[0]
        params = self._mask(batch, device, gen)
        for key, rng in self.ranges.items():
            if rng is not None:
                params[key] = _uniform(rng[0], rng[1], (batch,), gen, device)
        if self.random_order:
            params["order"] = torch.rand((batch, 4), generator=gen, device=device).argsort(dim=1)
        return params

    def apply(self, x: Tensor, params: Params) -> Tensor:
        steps: list[tuple[int, Callable[[Tensor], Tensor]]] = []
        if "brightness" in params:
            steps.append((0, lambda y: adjust_brightness(y, params["brightness"])))
        if "contrast" in params:
            steps.append((1, lambda y: adjust_contrast(y, params["contrast"])))
        if "saturation" in params:
            steps.append((2, lambda y: adjust_saturation(y, params["saturation"])))
        if "hue" in params:
            steps.append((3, lambda y: adjust_hue(y, params["hue"])))
        out = x
        if "order" not in params:
            for _, fn in steps:
                out = fn(out)
        else:
            order = params["order"]
            for stage in range(4):  # each sample runs its own permutation of the four steps
                current = out
                for idx, fn in steps:
                    out = _select(order[:, stage] == idx, fn(current), out)
        return _select(params["apply"], out, x) if "apply" in params else out


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Multiply by a per-sample factor (B,), clamped to [0, 1]."""
    return (x * _bcast(factor)).clamp(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the per-sample mean gray level: factor·x + (1 − factor)·mean, clamped."""
    gray = _grayscale(x) if x.shape[1] == 3 else x
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)
    f = _bcast(factor)
    return (f * x + (1 - f) * mean).clamp(0.0, 1.0)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend RGB with its grayscale version: factor·x + (1 − factor)·gray, clamped."""
    gray = _grayscale(x)
    return torch.lerp(gray, x, _bcast(factor).to(x.dtype)).clamp_(0.0, 1.0)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue of RGB images by a per-sample fraction of a turn (B,) in [-0.5, 0.5]."""
    maxc, argmax = x.max(dim=1, keepdim=True)  # ties pick R before G before B, like torchvision
    delta = maxc - x.min(dim=1, keepdim=True).values
    # hue in sixths of a turn: 2·i + (next channel − previous channel) / delta, i = argmax
    diff = x.gather(1, torch.remainder(argmax + 1, 3)) - x.gather(1, torch.remainder(argmax + 2, 3))
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue6 = 2.0 * argmax.to(x.dtype) + diff / safe
    hue6 = hue6 + 6.0 * shift.to(x.dtype).view(-1, 1, 1, 1)
    # HSV → RGB: channel = V − V·S·clamp(min(k, 4 − k), 0, 1), k = (n + 6H) mod 6, V·S = delta
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + hue6, 6.0)
    weight = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return maxc - delta * weight


class RandomGrayscale(BatchOp):
    """Replace RGB by its luma on all three channels, with probability p."""

    name = "random_grayscale"

    def __init__(self, p: float) -> None:
        self.p = p

    def sample(
        self, shape: Sequence[int], device: torch.device, gen: torch.Generator | None
    ) -> Params:
        return self._mask(shape[0], device, gen)

    def apply(self, x: Tensor, params: Params) -> Tensor:
        out = _grayscale(x).expand_as(x)
        return _select(params["apply"], out, x) if "apply" in params else out.contiguous()


class GaussianBlur(BatchOp):
    """Separable Gaussian blur with a per-sample sigma (grouped conv, reflect padding)."""

    name = "gaussian_blur"

    def __init__(self, sigma: tuple[float, float], kernel_size: int, p: float) -> None:
        self.sigma = sigma
        self.kernel_size = kernel_size
        self.p = p

    def sample(
        self, shape: Sequence[int], device: torch.device, gen: torch.Generator | None
    ) -> Params:
        params = self._mask(shape[0], device, gen)
        params["sigma"] = _uniform(self.sigma[0], self.sigma[1], (shape[0],), gen, device)
        return params

    def apply(self, x: Tensor, params: Params) -> Tensor:
        batch, channels, h, w = x.shape
        radius = self.kernel_size // 2
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        sigma = params["sigma"].to(x.dtype).unsqueeze(1)
        kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
        y = F.pad(x, (radius, radius, radius, radius), mode="reflect")
        y = y.reshape(1, batch * channels, h + 2 * radius, w + 2 * radius)
        y = F.conv2d(y, kernel.view(-1, 1, 1, self.kernel_size), groups=batch * channels)
        y = F.conv2d(y, kernel.view(-1, 1, self.kernel_size, 1), groups=batch * channels)
        out = y.reshape(batch, channels, h, w)
        return _select(params["apply"], out, x) if "apply" in params else out


class Solarize(BatchOp):
    """Invert pixels at or above the threshold: x ≥ t → 1 − x (BYOL, Grill et al. 2020)."""

    name = "solarize"

    def __init__(self, threshold: float, p: float) -> None:
        self.threshold = threshold
        self.p = p

    def sample(
        self, shape: Sequence[int], device: torch.device, gen: torch.Generator | None
    ) -> Params:
        return self._mask(shape[0], device, gen)

    def apply(self, x: Tensor, params: Params) -> Tensor:
        out = torch.where(x >= self.threshold, 1.0 - x, x)
        return _select(params["apply"], out, x) if "apply" in params else out


class GaussianNoise(BatchOp):
    """Add zero-mean Gaussian noise with a per-sample std, optionally clipped to [0, 1]."""

    name = "gaussian_noise"

    def __init__(self, std: tuple[float, float], clip: bool, p: float) -> None:
        self.std = std
        self.clip = clip
        self.p = p

    def sample(
        self, shape: Sequence[int], device: torch.device, gen: torch.Generator | None
    ) -> Params:
        params = self._mask(shape[0], device, gen)
        params["std"] = _uniform(self.std[0], self.std[1], (shape[0],), gen, device)
        params["noise"] = torch.randn(tuple(shape), generator=gen, device=device)
        return params

    def apply(self, x: Tensor, params: Params) -> Tensor:
        out = x + _bcast(params["std"].to(x.dtype)) * params["noise"].to(x.dtype)
        if self.clip:
            out = out.clamp(0.0, 1.0)
        return _select(params["apply"], out, x) if "apply" in params else out


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(x − mean) / std per channel; mean and std are (C,) tensors."""
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


# ----------------------------------------------------------------------------- modules


class BatchAugmentation(nn.Module):
    """A recipe of batched ops: uint8 or [0, 1] float (B, C, H, W) → normalised (B, C, size, size)."""

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
        x = _to_float(images)
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
        x = _resize(_to_float(images[None] if single else images), self.size)
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
