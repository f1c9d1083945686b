"""Collapse diagnostics for embeddings: per-dimension spread, effective rank, and the
alignment / uniformity of Wang & Isola 2020 (arXiv:2005.10242).

All take raw embeddings and L2-normalise them first. A healthy representation has
``std ~ 1`` (per-dimension std of normalised rows times sqrt(D): 1 when spread evenly over the
sphere, 0 when collapsed to a point), an effective rank well above 1, and uniformity well below 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.losses._dtype import upcast


@torch.no_grad()
def normalised_std(z: Tensor) -> float:
    """Mean per-dimension std of the L2-normalised rows, times sqrt(D) (0 = complete collapse)."""
    zn = F.normalize(upcast(z), dim=1)
    return float(zn.std(dim=0).mean()) * math.sqrt(zn.shape[1])


@torch.no_grad()
def effective_rank(z: Tensor, eps: float = 1e-12) -> float:
    """exp(entropy of the normalised singular values) of the centred, L2-normalised rows
    (Roy & Vetterli 2007): 1 for a rank-one (dimensional) collapse, up to min(N, D)."""
    zn = F.normalize(upcast(z), dim=1)
    zn = zn - zn.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(zn)
    total = s.sum()
    if total <= eps:
        return 1.0
    p = s / total
    entropy = -(p * torch.log(p.clamp_min(eps))).sum()
    return float(torch.exp(entropy))


@torch.no_grad()
def alignment(z1: Tensor, z2: Tensor, alpha: float = 2.0) -> float:
    """E ||f(x) - f(x+)||^alpha over positive pairs (rows of z1 and z2), normalised rows."""
    a, b = F.normalize(upcast(z1), dim=1), F.normalize(upcast(z2), dim=1)
    return float((a - b).norm(dim=1).pow(alpha).mean())


@torch.no_grad()
def uniformity(z: Tensor, t: float = 2.0) -> float:
    """log E exp(-t ||f(x) - f(y)||^2) over distinct pairs of normalised rows (lower = more uniform)."""
    zn = F.normalize(upcast(z), dim=1)
    n = zn.shape[0]
    if n < 2:
        return 0.0
    sq = torch.pdist(zn, p=2).pow(2)
    return float(torch.logsumexp(-t * sq, dim=0) - math.log(sq.numel()))


@torch.no_grad()
def collapse_stats(z1: Tensor, z2: Tensor | None = None) -> dict[str, float]:
    """All diagnostics for a batch: z1 (and z2, its positive views, for alignment)."""
    z = z1 if z2 is None else torch.cat([z1, z2])
    if not bool(torch.isfinite(z).all()):  # a diverged step: the trainer reports the NaN loss
        nan = float("nan")
        return {"emb_std": nan, "eff_rank": nan, "uniformity": nan, **({} if z2 is None else {"alignment": nan})}
    out = {
        "emb_std": normalised_std(z),
        "eff_rank": effective_rank(z),
        "uniformity": uniformity(z1),
    }
    if z2 is not None:
        out["alignment"] = alignment(z1, z2)
    return out
