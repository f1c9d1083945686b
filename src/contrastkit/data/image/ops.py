"""Batched image augmentation ops on (B, C, H, W) tensors with per-sample random parameters.

Everything runs on the images' device with no PIL and no per-image Python loop. Crop, flip and
rotation are fused into one affine warp (`F.affine_grid` + `F.grid_sample`). Randomness comes from
an optional `torch.Generator`, so a seeded run is reproducible. Augmentations follow SimCLR
(Chen et al. 2020, arXiv:2002.05709) and torchvision's conventions.

Each op is two steps: `sample(shape, device, generator) -> params` draws every random number for
the batch, `apply(x, params)` is deterministic. Params are tensors whose first dim is the batch,
so slicing them gives the parameters of single samples. Recipes of ops: `augment`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Params = dict[str, Tensor]
Gen = torch.Generator | None  # the optional source of randomness of `sample`
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
_CROP_TRIALS = 10


# ----------------------------------------------------------------------------- small helpers


def to_float(images: Tensor) -> Tensor:
    """uint8 → float32 in [0, 1]; floating tensors pass through unchanged."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    return images


def resize(x: Tensor, size: int) -> Tensor:
    """Bilinear, antialiased resize to (size, size); a no-op when already that size."""
    if x.shape[-2] == size and x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _uniform(
    lo: float, hi: float, shape: tuple[int, ...], gen: Gen, device: torch.device
) -> Tensor:
    return torch.rand(shape, generator=gen, device=device) * (hi - lo) + lo


def _coin(p: float, batch: int, gen: Gen, device: torch.device) -> Tensor:
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

    def sample(self, shape: Sequence[int], device: torch.device, gen: Gen) -> Params:
        """All random numbers for a batch of the given (B, C, H, W) input shape (by default only
        the per-sample coin of p < 1)."""
        return self._draw(shape[0], device, gen)

    def apply(self, x: Tensor, params: Params) -> Tensor:
        """Apply the op to float images in [0, 1] with params from `sample`."""
        raise NotImplementedError

    def out_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(shape)

    def _draw(
        self, batch: int, device: torch.device, gen: Gen, **ranges: tuple[float, float]
    ) -> Params:
        """The per-sample coin of p < 1 (``apply``), then per sample a value uniform in each
        (low, high) range, under its name, in the order given."""
        params = {} if self.p >= 1.0 else {"apply": _coin(self.p, batch, gen, device)}
        for key, (lo, hi) in ranges.items():
            params[key] = _uniform(lo, hi, (batch,), gen, device)
        return params

    def _keep(self, params: Params, out: Tensor, x: Tensor) -> Tensor:
        """`out` for the samples the op is applied to (all of them when p = 1), else the input."""
        return _select(params["apply"], out, x) if "apply" in params else out

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

    def sample(self, shape: Sequence[int], device: torch.device, gen: Gen) -> Params:
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

    def _sample_boxes(self, batch: int, h: int, w: int, device: torch.device, gen: Gen) -> Tensor:
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
            out = resize(x, self.size)
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

    def sample(self, shape: Sequence[int], device: torch.device, gen: Gen) -> Params:
        drawn = {key: rng for key, rng in self.ranges.items() if rng is not None}
        params = self._draw(shape[0], device, gen, **drawn)
        if self.random_order:
            order = torch.rand((shape[0], 4), generator=gen, device=device).argsort(dim=1)
            params["order"] = order
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
        return self._keep(params, out, x)


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

    def apply(self, x: Tensor, params: Params) -> Tensor:
        out = _grayscale(x).expand_as(x)
        return _select(params["apply"], out, x) if "apply" in params else out.contiguous()


class GaussianBlur(BatchOp):
    """Separable Gaussian blur with a per-sample sigma (grouped conv, reflect padding)."""

    name = "gaussian_blur"

    def __init__(self, sigma: tuple[float, float], kernel_size: int, p: float) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:  # `apply` keeps the size: an odd kernel only
            raise ValueError(f"GaussianBlur kernel_size must be odd and positive, got {kernel_size}")
        self.sigma = sigma
        self.kernel_size = kernel_size
        self.p = p

    def sample(self, shape: Sequence[int], device: torch.device, gen: Gen) -> Params:
        return self._draw(shape[0], device, gen, sigma=self.sigma)

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
        return self._keep(params, y.reshape(batch, channels, h, w), x)


class Solarize(BatchOp):
    """Invert pixels at or above the threshold: x ≥ t → 1 − x (BYOL, Grill et al. 2020)."""

    name = "solarize"

    def __init__(self, threshold: float, p: float) -> None:
        self.threshold = threshold
        self.p = p

    def apply(self, x: Tensor, params: Params) -> Tensor:
        return self._keep(params, torch.where(x >= self.threshold, 1.0 - x, x), x)


class GaussianNoise(BatchOp):
    """Add zero-mean Gaussian noise with a per-sample std, optionally clipped to [0, 1]."""

    name = "gaussian_noise"

    def __init__(self, std: tuple[float, float], clip: bool, p: float) -> None:
        self.std = std
        self.clip = clip
        self.p = p

    def sample(self, shape: Sequence[int], device: torch.device, gen: Gen) -> Params:
        params = self._draw(shape[0], device, gen, std=self.std)
        params["noise"] = torch.randn(tuple(shape), generator=gen, device=device)
        return params

    def apply(self, x: Tensor, params: Params) -> Tensor:
        out = x + _bcast(params["std"].to(x.dtype)) * params["noise"].to(x.dtype)
        if self.clip:
            out = out.clamp(0.0, 1.0)
        return self._keep(params, out, x)


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(x − mean) / std per channel; mean and std are (C,) tensors."""
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

