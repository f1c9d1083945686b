"""Ranking metrics@K, and full-ranking evaluation of recommendations.

`ranking_metric_sums` is the one implementation of Recall@K, NDCG@K, Precision@K, HitRate@K and
MRR@K: from the hit matrix of ranked lists and the number of relevant items of each query. It
serves `ranking_metrics` here (every item scored for every user, known items masked, in blocks of
users so memory stays O(block × items), plus catalogue coverage and popularity bias of the top-K
lists) and `contrastkit.evaluate.retrieval.retrieval_metrics` (embedding retrieval).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

ScoreFn = Callable[[Tensor], Tensor]  # (b,) user indices -> (b, n_items) scores
METRICS = ("recall", "ndcg", "precision", "hit", "mrr")


class _UserIndex:
    """(user, item) pairs sorted by user with CSR pointers, to fetch a block of users fast."""

    def __init__(self, pairs: np.ndarray, n_users: int, device: torch.device) -> None:
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        order = np.argsort(pairs[:, 0], kind="stable")
        self.users = torch.as_tensor(pairs[order, 0], device=device)
        self.items = torch.as_tensor(pairs[order, 1], device=device)
        counts = np.bincount(pairs[:, 0], minlength=n_users)
        self.indptr = np.concatenate([[0], np.cumsum(counts)])
        self.counts = counts

    def block(self, users: Tensor, first: int, last: int, row_of: Tensor) -> tuple[Tensor, Tensor]:
        """(rows, items) of the pairs of `users` (sorted, within [first, last])."""
        lo, hi = int(self.indptr[first]), int(self.indptr[last + 1])
        u, i = self.users[lo:hi], self.items[lo:hi]
        rows = row_of[u]
        keep = rows >= 0
        return rows[keep], i[keep]


def ranking_metric_sums(hits: Tensor, n_relevant: Tensor, ks: Sequence[int]) -> dict[str, float]:
    """Per-query metrics@k summed over the queries, as ``{"recall@k": sum, ...}`` for METRICS × ks.

    ``hits`` (Q, K) bool or float: whether the item at rank j + 1 of query q's ranked list is
    relevant (a list shorter than k counts its missing ranks as misses); ``n_relevant`` (Q,):
    the number of relevant items of each query, at least 1. Per query, with hits = relevant
    items in the top k: recall@k = hits / relevant items; precision@k = hits / k; hit@k = 1 if
    hits > 0; mrr@k = 1 / rank of the first relevant item within the top k (0 if none);
    ndcg@k = DCG@k / ideal DCG@k (min(relevant items, k) hits at the top) with gains
    1 / log2(rank + 1). Computed in float64; divide by Q for the means.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if hits.dim() != 2 or n_relevant.shape != hits.shape[:1]:
        shapes = f"{tuple(hits.shape)} and {tuple(n_relevant.shape)}"
        raise ValueError(f"hits must be (Q, K) and n_relevant (Q,); got {shapes}")
    hits = hits.to(torch.float64)
    if hits.shape[1] < ks[-1]:  # lists shorter than k: the missing ranks are misses
        hits = torch.cat([hits, hits.new_zeros(hits.shape[0], ks[-1] - hits.shape[1])], dim=1)
    n_rel = n_relevant.to(device=hits.device, dtype=torch.float64)
    if bool((n_rel < 1).any()):
        raise ValueError("every query needs at least one relevant item (n_relevant >= 1)")
    ranks = torch.arange(1, hits.shape[1] + 1, device=hits.device, dtype=torch.float64)
    discount = 1.0 / torch.log2(ranks + 1.0)
    ideal = torch.cumsum(discount, 0)  # ideal[n - 1]: DCG of n hits at the top
    per_query: dict[str, Tensor] = {}
    for k in ks:
        h = hits[:, :k]
        found = h.sum(1)
        first_hit = torch.argmax(h, dim=1).to(torch.float64)
        per_query[f"recall@{k}"] = found / n_rel
        best = ideal[(n_rel.clamp(max=k) - 1).long()]
        per_query[f"ndcg@{k}"] = (h * discount[:k]).sum(1) / best
        per_query[f"precision@{k}"] = found / k
        per_query[f"hit@{k}"] = (found > 0).to(torch.float64)
        mrr = torch.where(found > 0, 1.0 / (first_hit + 1.0), torch.zeros_like(found))
        per_query[f"mrr@{k}"] = mrr
    return {key: float(per_query[key].sum()) for key in (f"{m}@{k}" for m in METRICS for k in ks)}

def ranking_metrics(
    score_fn: ScoreFn,
    n_users: int,
    n_items: int,
    targets: np.ndarray,
    exclude: Sequence[np.ndarray] = (),
    *,
    ks: Sequence[int] = (10, 20, 50),
    popularity: np.ndarray | None = None,
    block_users: int = 1024,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Metrics@K of ranking all items for every user that has target (user, item) pairs.

    `exclude` pairs (e.g. training interactions) are never recommended. Recall@K = hits / |T_u|,
    Precision@K = hits / K, NDCG@K = DCG / ideal DCG of min(|T_u|, K) hits, HitRate@K = [hits > 0],
    MRR@K = 1 / rank of the first hit (0 if none), averaged over the users with targets (computed
    by `ranking_metric_sums`). coverage@K: share of the catalogue in at least one top-K list;
    popularity@K: mean training popularity (interactions) of the recommended items; tail@K:
    share of recommended items outside the 20 % most popular.
    """
    device = torch.device(device)
    ks = sorted({int(k) for k in ks})
    kmax = min(max(ks), n_items)
    tgt = _UserIndex(targets, n_users, device)
    excl = [_UserIndex(e, n_users, device) for e in exclude if np.asarray(e).size]
    eval_users = np.nonzero(tgt.counts > 0)[0]
    out: dict[str, float] = {"users": float(eval_users.size)}
    if eval_users.size == 0:
        return out
    sums = {f"{m}@{k}": 0.0 for m in METRICS for k in ks}
    covered = {k: torch.zeros(n_items, dtype=torch.bool, device=device) for k in ks}
    pop_sum = dict.fromkeys(ks, 0.0)
    tail_sum = dict.fromkeys(ks, 0.0)
    pop_t = tail_t = None
    if popularity is not None:
        pop_t = torch.as_tensor(popularity, dtype=torch.float64, device=device)
        head = max(1, math.ceil(0.2 * n_items))
        head_items = torch.topk(pop_t, head).indices
        tail_t = torch.ones(n_items, dtype=torch.float64, device=device)
        tail_t[head_items] = 0.0
    row_of = torch.full((n_users,), -1, dtype=torch.long, device=device)
    for start in range(0, eval_users.size, block_users):
        block = eval_users[start : start + block_users]
        users = torch.as_tensor(block, device=device)
        row_of[users] = torch.arange(users.numel(), device=device)
        first, last = int(block[0]), int(block[-1])
        scores = score_fn(users).to(device=device, dtype=torch.float32).clone()
        for index in excl:
            r, i = index.block(users, first, last, row_of)
            scores[r, i] = -torch.inf
        target = torch.zeros_like(scores, dtype=torch.bool)
        r, i = tgt.block(users, first, last, row_of)
        target[r, i] = True
        row_of[users] = -1
        top = torch.topk(scores, kmax, dim=1).indices
        for key, value in ranking_metric_sums(target.gather(1, top), target.sum(1), ks).items():
            sums[key] += value
        for k in ks:
            topk = top[:, : min(k, kmax)]
            covered[k][topk.reshape(-1)] = True
            if pop_t is not None and tail_t is not None:
                pop_sum[k] += float(pop_t[topk].mean(1).sum())
                tail_sum[k] += float(tail_t[topk].mean(1).sum())
    n = float(eval_users.size)
    out.update({key: value / n for key, value in sums.items()})
    for k in ks:
        out[f"coverage@{k}"] = float(covered[k].sum()) / n_items
        if pop_t is not None:
            out[f"popularity@{k}"] = pop_sum[k] / n
            out[f"tail@{k}"] = tail_sum[k] / n
    return out


def embedding_scorer(user_emb: Tensor, item_emb: Tensor) -> ScoreFn:
    """Dot-product scores of a block of users against every item."""

    def score(users: Tensor) -> Tensor:
        return user_emb[users.to(user_emb.device)] @ item_emb.T

    return score


def popularity_scorer(popularity: np.ndarray) -> ScoreFn:
    """The same score for every user: the item's number of training interactions."""
    pop = torch.as_tensor(popularity, dtype=torch.float32)

    def score(users: Tensor) -> Tensor:
        return pop.to(users.device).expand(users.numel(), -1)

    return score
