"""Regression losses without negatives: BYOL's normalised MSE (Grill et al. 2020,
arXiv:2006.07733) and SimSiam's negative cosine (Chen & He 2021, arXiv:2011.10566)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.losses._dtype import upcast


def _check_pair(p: Tensor, z: Tensor) -> None:
    if p.dim() != 2 or p.shape != z.shape:
        raise ValueError(f"expected two (N, D) tensors of the same shape; got {tuple(p.shape)} and {tuple(z.shape)}")


def normalized_mse_loss(p: Tensor, z: Tensor, *, stop_gradient: bool = True) -> Tensor:
    """BYOL: ``mean_i || p_i/|p_i| - z_i/|z_i| ||^2 = mean_i (2 - 2 cos(p_i, z_i))``; z detached."""
    _check_pair(p, z)
    target = z.detach() if stop_gradient else z
    cos = F.cosine_similarity(upcast(p), upcast(target), dim=1)
    return (2.0 - 2.0 * cos).mean()


def negative_cosine_loss(p: Tensor, z: Tensor, *, stop_gradient: bool = True) -> Tensor:
    """SimSiam: ``-mean_i cos(p_i, stopgrad(z_i))`` (minimum -1)."""
    _check_pair(p, z)
    target = z.detach() if stop_gradient else z
    return -F.cosine_similarity(upcast(p), upcast(target), dim=1).mean()


class NormalizedMSELoss(nn.Module):
    """Module form of :func:`normalized_mse_loss` (symmetrise by calling it twice)."""

    def forward(self, p: Tensor, z: Tensor) -> Tensor:
        return normalized_mse_loss(p, z)


class NegativeCosineLoss(nn.Module):
    """Module form of :func:`negative_cosine_loss`."""

    def forward(self, p: Tensor, z: Tensor) -> Tensor:
        return negative_cosine_loss(p, z)
