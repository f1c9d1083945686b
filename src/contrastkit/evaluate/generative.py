"""Sample-quality metrics of a generator, computed in a feature space the caller chooses.

- Fréchet distance (Heusel et al. 2017, arXiv:1706.08500) between Gaussians fitted to two
  feature sets: ``||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``. The trace of the matrix
  square root is computed exactly from eigen-decompositions of symmetric matrices:
  ``tr (S1 S2)^(1/2) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2)))`` (no iterative ``sqrtm``).
- Improved precision and recall (Kynkäänniemi et al. 2019, arXiv:1904.06991): each set's
  manifold is the union of balls around its points with radius the distance to the k-th
  nearest neighbour in the same set; precision is the share of generated points inside the
  real manifold, recall the share of real points inside the generated one.

With contrastkit the feature space is a contrastkit encoder trained on the real data (see
``contrastkit.tasks.gan``), **not** Inception-v3: the numbers are comparable between runs that
use the same encoder, not with published FID values.
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastkit.errors import UserError


def _features(x: Tensor, what: str, min_rows: int = 2) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise UserError(f"{what} must be a (N, D) tensor of features, got {getattr(x, 'shape', type(x))}")
    if x.shape[0] < min_rows:
        raise UserError(f"{what} needs at least {min_rows} rows, got {x.shape[0]}")
    if not bool(torch.isfinite(x).all()):
        raise UserError(f"{what} holds NaN or infinite values")
    return x.detach().to(torch.float64).cpu()


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64."""
    x = _features(features, "features")
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (x.shape[0] - 1)


def _psd_sqrt(sigma: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    vals, vecs = torch.linalg.eigh((sigma + sigma.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_from_stats(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise UserError(
            f"Fréchet distance needs matching shapes; got means {tuple(mu1.shape)}, {tuple(mu2.shape)} "
            f"and covariances {tuple(sigma1.shape)}, {tuple(sigma2.shape)}"
        )
    mu1, mu2, s1, s2 = (t.to(torch.float64) for t in (mu1, mu2, sigma1, sigma2))
    root1 = _psd_sqrt(s1)
    middle = root1 @ s2 @ root1
    tr_cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    value = float((mu1 - mu2).square().sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_cross)
    return max(value, 0.0)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to features ``a`` (N, D) and ``b`` (M, D)."""
    if a.dim() == 2 and b.dim() == 2 and a.shape[1] != b.shape[1]:
        raise UserError(f"feature sets differ in width: {a.shape[1]} vs {b.shape[1]}")
    return frechet_from_stats(*gaussian_stats(a), *gaussian_stats(b))


def _kth_radius(x: Tensor, k: int, block: int) -> Tensor:
    """Distance of each row of x to its k-th nearest other row of x."""
    out = torch.empty(x.shape[0], dtype=x.dtype)
    for start in range(0, x.shape[0], block):
        d = torch.cdist(x[start : start + block], x)
        out[start : start + block] = d.kthvalue(k + 1, dim=1).values  # +1: the point itself (0)
    return out


def _coverage(points: Tensor, centres: Tensor, radii: Tensor, block: int) -> float:
    """Share of ``points`` within radius[j] of some centre j."""
    inside = 0
    for start in range(0, points.shape[0], block):
        d = torch.cdist(points[start : start + block], centres)
        inside += int((d <= radii[None, :]).any(dim=1).sum())
    return inside / points.shape[0]


def precision_recall(real: Tensor, fake: Tensor, *, k: int = 3, block: int = 1024) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``fake`` against ``real``
    features with k-NN manifolds; distances computed in blocks of ``block`` rows."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"k must be a positive integer, got {k!r}")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise UserError(f"block must be a positive integer, got {block!r}")
    r = _features(real, "real", k + 1).to(torch.float32)
    f = _features(fake, "fake", k + 1).to(torch.float32)
    if r.shape[1] != f.shape[1]:
        raise UserError(f"feature sets differ in width: {r.shape[1]} vs {f.shape[1]}")
    real_radii, fake_radii = _kth_radius(r, k, block), _kth_radius(f, k, block)
    return {
        "precision": _coverage(f, r, real_radii, block),
        "recall": _coverage(r, f, fake_radii, block),
        "k": k,
    }
