"""Barlow Twins redundancy-reduction loss (Zbontar et al. 2021, arXiv:2103.03230)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from contrastkit.losses._dtype import upcast

Reducer = Callable[[Tensor], Tensor]


def _standardise(z: Tensor, eps: float) -> Tensor:
    z = upcast(z)
    return (z - z.mean(0)) / (z.var(0, unbiased=False) + eps).sqrt()


def cross_correlation(z1: Tensor, z2: Tensor, *, eps: float = 1e-5, reduce: Reducer | None = None) -> Tensor:
    """(D, D) cross-correlation of the batch-standardised embeddings: ``z1n.T @ z2n / N``.

    ``reduce`` (e.g. an autograd-aware all-reduce sum across ranks) is applied to the
    un-normalised sum before dividing by the global batch size.
    """
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"expected two (N, D) tensors of the same shape; got {tuple(z1.shape)} and {tuple(z2.shape)}")
    c = _standardise(z1, eps).T @ _standardise(z2, eps)
    n = torch.tensor(float(z1.shape[0]), device=c.device)
    if reduce is not None:
        c, n = reduce(c), reduce(n)
    return c / n


def barlow_twins_loss(
    z1: Tensor, z2: Tensor, *, lambda_offdiag: float = 0.0051, eps: float = 1e-5, reduce: Reducer | None = None
) -> Tensor:
    """``sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2`` with C the cross-correlation."""
    c = cross_correlation(z1, z2, eps=eps, reduce=reduce)
    diag = torch.diagonal(c)
    on = (1.0 - diag).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return on + lambda_offdiag * off


class BarlowTwinsLoss(nn.Module):
    """Module form of :func:`barlow_twins_loss`."""

    def __init__(self, lambda_offdiag: float = 0.0051, eps: float = 1e-5) -> None:
        super().__init__()
        self.lambda_offdiag, self.eps = lambda_offdiag, eps

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return barlow_twins_loss(z1, z2, lambda_offdiag=self.lambda_offdiag, eps=self.eps)

    def extra_repr(self) -> str:
        return f"lambda_offdiag={self.lambda_offdiag}"
