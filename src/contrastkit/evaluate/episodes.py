"""N-way K-shot episodes on frozen features: the prototype classifier of few-shot learning
(Snell et al. 2017, arXiv:1703.05175), as in the few-shot evaluation of self-supervised features
(e.g. Chen et al. 2019, arXiv:1904.04232).

An episode draws N classes, K support and Q query examples of each; a class's prototype is the
mean of its support features; each query gets the class of the nearest prototype (cosine, or
Euclidean distance). The report is the mean accuracy over the episodes with its 95 % confidence
interval, ``1.96 · s / sqrt(E)`` (s: the standard deviation of the E episode accuracies).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.errors import UserError, check_choice

EPISODE_METRICS: tuple[str, ...] = ("cosine", "euclidean")


def confidence_interval(accuracies: Tensor, z: float = 1.96) -> float:
    """Half-width of the normal-approximation confidence interval of the mean (95 % for 1.96)."""
    n = accuracies.numel()
    if n < 2:
        return float("nan")
    return float(z * accuracies.double().std(unbiased=True) / math.sqrt(n))


def prototype_predictions(support: Tensor, support_labels: Tensor, queries: Tensor, ways: int, metric: str) -> Tensor:
    """Nearest-prototype class (0..ways-1) of each query; prototypes: mean support feature per class."""
    prototypes = torch.zeros(ways, support.shape[1], dtype=support.dtype).index_add_(0, support_labels, support)
    prototypes = prototypes / torch.bincount(support_labels, minlength=ways).clamp_min(1).unsqueeze(1)
    if metric == "cosine":
        return (F.normalize(queries, dim=1) @ F.normalize(prototypes, dim=1).T).argmax(1)
    return torch.cdist(queries, prototypes).argmin(1)


def episode_accuracy(
    features: Tensor,
    labels: Tensor,
    *,
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    episodes: int = 600,
    metric: str = "cosine",
    classes: Sequence[int] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean accuracy ± 95 % CI of ``episodes`` N-way (``ways``) K-shot (``shots``) episodes with
    ``queries`` queries per class, drawn (seeded) from the ``classes`` given (default: all)."""
    check_choice("episode metric", metric, EPISODE_METRICS)
    if features.dim() != 2 or labels.shape != (features.shape[0],):
        raise UserError(f"episodes need features (N, D) and labels (N,); got {tuple(features.shape)} and {tuple(labels.shape)}")
    labels = labels.long()
    pool = sorted(set(labels.tolist()) if classes is None else {int(c) for c in classes})
    members = {c: torch.nonzero(labels == c).flatten() for c in pool}
    need = shots + queries
    usable = [c for c in pool if members[c].numel() >= need]
    if len(usable) < ways:
        raise UserError(
            f"{ways}-way {shots}-shot episodes with {queries} queries need {ways} classes of >= {need} examples; "
            f"{len(usable)} of the {len(pool)} classes have them"
        )
    gen = torch.Generator().manual_seed(seed * 7919 + ways * 101 + shots)
    feats = features.float()
    accuracies = torch.empty(episodes, dtype=torch.float64)
    for e in range(episodes):
        chosen = [usable[i] for i in torch.randperm(len(usable), generator=gen)[:ways].tolist()]
        picks = [members[c][torch.randperm(members[c].numel(), generator=gen)[:need]] for c in chosen]
        support = torch.cat([p[:shots] for p in picks])
        query = torch.cat([p[shots:] for p in picks])
        truth = torch.arange(ways).repeat_interleave(queries)
        predicted = prototype_predictions(feats[support], torch.arange(ways).repeat_interleave(shots), feats[query], ways, metric)
        accuracies[e] = (predicted == truth).double().mean()
    return {
        "ways": ways,
        "shots": shots,
        "queries": queries,
        "episodes": episodes,
        "metric": metric,
        "classes": pool,
        "mean": float(accuracies.mean()),
        "std": float(accuracies.std(unbiased=True)) if episodes > 1 else 0.0,
        "ci95": confidence_interval(accuracies),
    }
