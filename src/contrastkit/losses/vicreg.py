"""VICReg: variance-invariance-covariance regularisation (Bardes et al. 2022, arXiv:2105.04906)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.losses._dtype import upcast


def variance_term(z: Tensor, *, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """``mean_j relu(gamma - sqrt(Var(z_j) + eps))``: hinge on each dimension's std."""
    std = torch.sqrt(upcast(z).var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance_term(z: Tensor) -> Tensor:
    """``sum_{i != j} Cov(z)_ij^2 / D``: decorrelates the dimensions."""
    z = upcast(z)
    n, d = z.shape
    zc = z - z.mean(dim=0)
    cov = zc.T @ zc / max(n - 1, 1)
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d


def vicreg_loss(
    z1: Tensor,
    z2: Tensor,
    *,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    eps: float = 1e-4,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of invariance (MSE), variance and covariance terms; returns (loss, parts), the
    parts as detached scalar tensors."""
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"expected two (N, D) tensors of the same shape; got {tuple(z1.shape)} and {tuple(z2.shape)}")
    inv = F.mse_loss(upcast(z1), upcast(z2))
    var = (variance_term(z1, eps=eps) + variance_term(z2, eps=eps)) / 2
    cov = covariance_term(z1) + covariance_term(z2)
    loss = sim_weight * inv + var_weight * var + cov_weight * cov
    parts = {"invariance": inv.detach(), "variance": var.detach(), "covariance": cov.detach()}
    return loss, parts


class VICRegLoss(nn.Module):
    """Module form of :func:`vicreg_loss` (returns the loss only)."""

    def __init__(self, sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0) -> None:
        super().__init__()
        self.sim_weight, self.var_weight, self.cov_weight = sim_weight, var_weight, cov_weight

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return vicreg_loss(
            z1, z2, sim_weight=self.sim_weight, var_weight=self.var_weight, cov_weight=self.cov_weight
        )[0]

    def extra_repr(self) -> str:
        return f"sim={self.sim_weight}, var={self.var_weight}, cov={self.cov_weight}"
