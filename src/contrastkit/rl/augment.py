"""Batched image augmentations of stacked frames for RL: per-sample random crops (CURL,
Srinivas et al. 2020) and random shifts (DrQ / ATC, Stooke et al. 2021). One crop per sample,
shared by all stacked frames (channels) of that sample; no Python loop over the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _crop_at(x: Tensor, top: Tensor, left: Tensor, height: int, width: int) -> Tensor:
    """``x[i, :, top[i]:top[i]+height, left[i]:left[i]+width]`` for every sample i, gathered."""
    n, c, _, w = x.shape
    rows = (top.view(n, 1) + torch.arange(height, device=x.device).view(1, height))  # (n, h)
    cols = (left.view(n, 1) + torch.arange(width, device=x.device).view(1, width))  # (n, w)
    idx_rows = rows.view(n, 1, height, 1).expand(n, c, height, w)
    out = torch.gather(x, 2, idx_rows)  # (n, c, height, w)
    idx_cols = cols.view(n, 1, 1, width).expand(n, c, height, width)
    return torch.gather(out, 3, idx_cols)


def random_crop(x: Tensor, margin: int, generator: torch.Generator | None = None) -> Tensor:
    """Crop each (C, H, W) sample of ``x`` to (H - 2·margin, W - 2·margin) at a random offset
    in [0, 2·margin] (the same offset for all channels of a sample)."""
    if margin == 0:
        return x
    n, _, h, w = x.shape
    top = torch.randint(0, 2 * margin + 1, (n,), generator=generator).to(x.device)
    left = torch.randint(0, 2 * margin + 1, (n,), generator=generator).to(x.device)
    return _crop_at(x, top, left, h - 2 * margin, w - 2 * margin)


def center_crop(x: Tensor, margin: int) -> Tensor:
    """The central (H - 2·margin, W - 2·margin) window (what the agent sees when acting)."""
    if margin == 0:
        return x
    return x[..., margin : x.shape[-2] - margin, margin : x.shape[-1] - margin]


def random_shift(x: Tensor, pad: int, generator: torch.Generator | None = None) -> Tensor:
    """Pad each sample by ``pad`` pixels (edge values repeated) and crop back to its size at a
    random offset: a shift of up to ±pad pixels, the same for all channels of a sample."""
    if pad == 0:
        return x
    padded = F.pad(x.float(), (pad, pad, pad, pad), mode="replicate").to(x.dtype)
    return random_crop(padded, pad, generator)
