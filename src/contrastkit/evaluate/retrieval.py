"""Retrieval metrics over a corpus with binary relevance: Recall@K, Precision@K, hit rate@K (R@K
as reported for image–text retrieval by Radford et al. 2021), MRR@K and nDCG@K (Järvelin &
Kekäläinen 2002), ranked from embeddings in query chunks so memory stays O(chunk × corpus); the
metrics themselves are `contrastkit.evaluate.ranking.ranking_metric_sums`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.errors import UserError
from contrastkit.evaluate.ranking import ranking_metric_sums


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
    long tensor when each query has exactly one). Returns ``queries`` (those with a relevant
    item; the others are skipped) and the means over them of recall@k, ndcg@k, precision@k, hit@k
    and mrr@k (definitions: `ranking_metric_sums`).
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
    top = torch.cat(tops)  # (Q, k_max): shorter than k when the corpus is; ranks past it are misses
    hits = (top.unsqueeze(-1) == rel.unsqueeze(1)).any(-1)  # (Q, k_max); the -1 padding never hits
    n_rel = (rel >= 0).sum(1)
    keep = n_rel > 0  # queries without relevant items are skipped
    out: dict[str, float] = {"queries": int(keep.sum())}
    if out["queries"] == 0:
        return out
    sums = ranking_metric_sums(hits[keep], n_rel[keep], ks)
    out.update({key: value / out["queries"] for key, value in sums.items()})
    return out
