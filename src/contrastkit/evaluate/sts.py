"""Semantic textual similarity: Spearman and Pearson correlation between the cosine similarity
of two sentence embeddings and human scores (the STS-B / SICK-R protocol, e.g. Reimers &
Gurevych 2019, arXiv:1908.10084; Gao et al. 2021, arXiv:2104.08821)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.errors import UserError


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    start = 0
    while start < len(x):
        stop = start + 1
        while stop < len(x) and sorted_x[stop] == sorted_x[start]:
            stop += 1
        ranks[order[start:stop]] = (start + stop + 1) / 2.0  # mean of 1-based ranks start+1..stop
        start = stop
    return ranks


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson correlation coefficient (NaN when either side is constant)."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise UserError(f"correlation needs two 1-D sequences of equal length >= 2; got {a.shape} and {b.shape}")
    a = a - a.mean()
    b = b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation: Pearson correlation of the (tie-averaged) ranks."""
    return pearson(rankdata(np.asarray(x)), rankdata(np.asarray(y)))


def sts_scores(emb1: Tensor, emb2: Tensor, scores: Sequence[float]) -> dict[str, float]:
    """Spearman and Pearson correlation (×1, in [-1, 1]) of cos(emb1_i, emb2_i) with scores_i."""
    if emb1.dim() != 2 or emb1.shape != emb2.shape or emb1.shape[0] != len(scores):
        raise UserError(
            f"STS needs two (N, D) embedding matrices and N scores; got {tuple(emb1.shape)}, "
            f"{tuple(emb2.shape)} and {len(scores)} scores"
        )
    cos = F.cosine_similarity(emb1.double(), emb2.double(), dim=1).cpu().numpy()
    gold = np.asarray(scores, dtype=np.float64)
    return {"spearman": spearman(cos, gold), "pearson": pearson(cos, gold), "pairs": len(gold)}


def evaluate_sts(
    encode: Callable[[list[str]], Tensor],
    sentences1: Sequence[str],
    sentences2: Sequence[str],
    scores: Sequence[float],
) -> dict[str, float]:
    """Encode each distinct sentence once and score the pairs (see :func:`sts_scores`)."""
    if not len(sentences1) == len(sentences2) == len(scores):
        raise UserError(
            f"STS data needs equally many sentences and scores; got {len(sentences1)}, "
            f"{len(sentences2)} and {len(scores)}"
        )
    unique = list(dict.fromkeys([*sentences1, *sentences2]))
    where = {s: i for i, s in enumerate(unique)}
    emb = encode(unique)
    idx1 = torch.tensor([where[s] for s in sentences1], dtype=torch.long)
    idx2 = torch.tensor([where[s] for s in sentences2], dtype=torch.long)
    return sts_scores(emb[idx1], emb[idx2], scores)
