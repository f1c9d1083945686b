"""Pairwise similarities and distances between two sets of embeddings, behind one registry.

Similarities (larger = more alike) feed the InfoNCE kernel; distances (smaller = more alike)
feed the pair and triplet losses. Both compute in at least float32, so half / bfloat16
inputs are safe, and the Euclidean ones use a square root whose gradient is 0 (not NaN) at
zero distance.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.errors import UserError, check_choice

SimilarityFn = Callable[[Tensor, Tensor], Tensor]


def _check_pair(a: Tensor, b: Tensor, what: str = "embeddings") -> None:
    """Raise UserError unless a is (n, d) and b is (m, d)."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise UserError(
            f"{what} must be 2-D with the same width, (n, d) and (m, d); "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _working_dtype(t: Tensor) -> torch.dtype:
    """float64 stays float64; everything else (half, bfloat16, float32) computes in float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def safe_sqrt(x: Tensor) -> Tensor:
    """sqrt of a non-negative tensor with gradient 0 where x <= 0 (instead of inf / NaN)."""
    positive = x > 0
    return torch.where(positive, x.clamp_min(torch.finfo(x.dtype).tiny).sqrt(), x.new_zeros(()))


def pairwise_distance(a: Tensor, b: Tensor | None = None, squared: bool = False) -> Tensor:
    """Euclidean distances (n, m) between the rows of a (n, d) and b (m, d); b=None means a.

    Uses |a|² + |b|² − 2ab (one matmul), clamped at 0; with b=None the diagonal is exactly 0.
    The square root has a zero gradient at zero distance.
    """
    same = b is None
    b_ = a if b is None else b
    _check_pair(a, b_)
    dtype = _working_dtype(a)
    a32 = a.to(dtype)
    b32 = a32 if same else b_.to(dtype)
    sq_a = a32.pow(2).sum(1, keepdim=True)
    sq_b = sq_a.T if same else b32.pow(2).sum(1).unsqueeze(0)
    d2 = (sq_a + sq_b - 2.0 * (a32 @ b32.T)).clamp_min(0.0)
    if same:
        d2 = d2 * (1.0 - torch.eye(d2.shape[0], dtype=dtype, device=d2.device))
    return d2 if squared else safe_sqrt(d2)


def cosine_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity (n, m) of the rows of a and b (rows are L2-normalised first)."""
    _check_pair(a, b)
    return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


def dot_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Dot product (n, m) of the rows of a and b."""
    _check_pair(a, b)
    return a @ b.T


def neg_euclidean_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Negative Euclidean distance (n, m); gradient is 0 (not NaN) at zero distance."""
    return -pairwise_distance(a, b)


SIMILARITIES: dict[str, SimilarityFn] = {
    "cosine": cosine_similarity,
    "dot": dot_similarity,
    "neg_euclidean": neg_euclidean_similarity,
}


def get_similarity(name: str) -> SimilarityFn:
    """The similarity function registered as name; UserError listing the allowed names if none."""
    check_choice("similarity", name, SIMILARITIES)
    return SIMILARITIES[name]


def pairwise_similarity(a: Tensor, b: Tensor, metric: str = "cosine") -> Tensor:
    """Similarity matrix (n, m) between a (n, d) and b (m, d) under metric (see SIMILARITIES)."""
    return get_similarity(metric)(a, b)


DISTANCES: tuple[str, ...] = ("euclidean", "squared_euclidean", "cosine")


def distance_matrix(a: Tensor, b: Tensor | None = None, metric: str = "euclidean") -> Tensor:
    """Distance matrix (n, m) in at least float32: euclidean, squared_euclidean or cosine (1 − cos).

    b=None means a (the diagonal is then exactly 0 for the Euclidean metrics).
    """
    check_choice("distance", metric, DISTANCES)
    if metric == "cosine":
        b_ = a if b is None else b
        _check_pair(a, b_)
        dtype = _working_dtype(a)
        an = F.normalize(a.to(dtype), dim=1)
        bn = an if b is None else F.normalize(b_.to(dtype), dim=1)
        return 1.0 - an @ bn.T
    return pairwise_distance(a, b, squared=metric == "squared_euclidean")


def paired_distance(x1: Tensor, x2: Tensor, metric: str = "euclidean") -> Tensor:
    """Distance (n,) between matching rows x1[i], x2[i] (same metrics as :func:`distance_matrix`)."""
    check_choice("distance", metric, DISTANCES)
    if x1.dim() != 2 or x1.shape != x2.shape:
        raise UserError(
            f"paired inputs must both be (n, d) with equal shapes; "
            f"got {tuple(x1.shape)} and {tuple(x2.shape)}"
        )
    dtype = _working_dtype(x1)
    a, b = x1.to(dtype), x2.to(dtype)
    if metric == "cosine":
        return 1.0 - F.cosine_similarity(a, b, dim=1)
    d2 = (a - b).pow(2).sum(1)
    return d2 if metric == "squared_euclidean" else safe_sqrt(d2)
