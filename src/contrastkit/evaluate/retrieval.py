"""Retrieval metrics over a corpus with binary relevance: Recall@K, hit rate@K (R@K as reported
for image–text retrieval by Radford et al. 2021), MRR@K and nDCG@K (Järvelin & Kekäläinen
2002), computed from embeddings in query chunks so memory stays O(chunk × corpus)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.errors import UserError


def _relevance_matrix(relevant: Sequence[Sequence[int]] | Tensor, n_queries: int, n_items: int) -> Tensor:
    """Relevant item ids as a (Q, R_max) long tensor padded with -1."""
    if isinstance(relevant, Tensor):
        rel = relevant.long()
        if rel.dim() == 1:
            rel = rel.unsqueeze(1)
    else:
        width = max((len(r) for r in relevant), default=0)
        rel = torch.full((len(relevant), max(width, 1)), -1, dtype=torch.long)
        for i, r in enumerate(relevant):
            if len(r):
                rel[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    if rel.shape[0] != n_queries:
        raise UserError(f"relevant must list the relevant items of each of the {n_queries} queries; got {rel.shape[0]}")
    if rel.numel() and (int(rel.max()) >= n_items or int(rel.min()) < -1):
        raise UserError(f"relevant item ids must be in [0, {n_items}); got values in [{int(rel.min())}, {int(rel.max())}]")
    return rel


def ranking_metrics(top: Tensor, rel: Tensor, ks: Sequence[int]) -> dict[str, float]:
    """Metrics from ranked item ids ``top`` (Q, K_max) and relevant ids ``rel`` (Q, R) (-1 = pad).

    Per query: recall@k = relevant items in the top k / relevant items; hit@k = 1 if any is;
    mrr@k = 1 / rank of the first relevant item within the top k (else 0); ndcg@k = DCG@k /
    ideal DCG@k with gains 1/log2(rank + 1). Queries without relevant items are skipped.
    """
    hits = (top.unsqueeze(-1) == rel.unsqueeze(1)).any(-1).double()  # (Q, K_max)
    n_rel = (rel >= 0).sum(1).double()
    keep = n_rel > 0
    hits, n_rel = hits[keep], n_rel[keep]
    out: dict[str, float] = {"queries": int(keep.sum())}
    if hits.shape[0] == 0:
        return out
    ranks = torch.arange(1, top.shape[1] + 1, dtype=torch.float64)
    discounts = 1.0 / torch.log2(ranks + 1.0)
    for k in ks:
        h = hits[:, :k]
        found = h.sum(1)
        out[f"recall@{k}"] = float((found / n_rel).mean())
        out[f"hit@{k}"] = float((found > 0).double().mean())
        first = torch.where(h.any(1), h.argmax(1).double() + 1.0, torch.full_like(found, float("inf")))
        out[f"mrr@{k}"] = float((1.0 / first).mean())
        dcg = (h * discounts[:k]).sum(1)
        ideal = torch.cumsum(discounts[:k], 0)[(n_rel.clamp(max=k) - 1).long()]
        out[f"ndcg@{k}"] = float((dcg / ideal).mean())
    return out


def retrieval_metrics(
    queries: Tensor,
    corpus: Tensor,
    relevant: Sequence[Sequence[int]] | Tensor,
    *,
    ks: Sequence[int] = (1, 5, 10),
    similarity: str = "cosine",
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Rank the corpus (N, D) for each query (Q, D) by cosine (or dot) similarity and score it.

    ``relevant``: for each query the ids of its relevant corpus items (a list of lists, or a (Q,)
    long tensor when each query has exactly one).
    """
    if queries.dim() != 2 or corpus.dim() != 2 or queries.shape[1] != corpus.shape[1]:
        raise UserError(
            f"queries (Q, D) and corpus (N, D) must be 2-D with the same D; got {tuple(queries.shape)} and {tuple(corpus.shape)}"
        )
    if similarity not in ("cosine", "dot"):
        raise UserError(f"retrieval similarity must be cosine or dot, got {similarity!r}")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise UserError(f"ks must be positive integers, got {list(ks)}")
    rel = _relevance_matrix(relevant, queries.shape[0], corpus.shape[0])
    q, c = queries.float(), corpus.float()
    if similarity == "cosine":
        q, c = F.normalize(q, dim=1), F.normalize(c, dim=1)
    k_max = min(ks[-1], c.shape[0])
    tops = []
    for start in range(0, q.shape[0], chunk_size):
        sims = q[start : start + chunk_size] @ c.T
        tops.append(torch.topk(sims, k_max, dim=1).indices)
    top = torch.cat(tops)
    if k_max < ks[-1]:  # corpus smaller than the largest k: pad with "no item"
        top = torch.cat([top, torch.full((top.shape[0], ks[-1] - k_max), -2, dtype=torch.long)], 1)
    return ranking_metrics(top, rel, ks)
