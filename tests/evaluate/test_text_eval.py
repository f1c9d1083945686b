"""STS correlations and retrieval metrics against hand-computed values; the retrieval and the
recommendation evaluations agree on the same ranking problem."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from contrastkit.errors import UserError
from contrastkit.evaluate.ranking import METRICS, ranking_metric_sums, ranking_metrics
from contrastkit.evaluate.retrieval import retrieval_metrics
from contrastkit.evaluate.sts import evaluate_sts, pearson, rankdata, spearman, sts_scores


def test_ranks_average_ties() -> None:
    assert rankdata(np.array([10.0, 20.0, 10.0, 30.0])).tolist() == [1.5, 3.0, 1.5, 4.0]


def test_spearman_and_pearson_by_hand() -> None:
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    y = [2.0, 1.0, 4.0, 3.0, 5.0]
    # Spearman without ties: 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6*4/120 = 0.8
    assert spearman(x, y) == pytest.approx(0.8)
    assert pearson(x, y) == pytest.approx(0.8)
    z = [1.0, 4.0, 9.0, 16.0, 25.0]
    assert spearman(x, z) == pytest.approx(1.0)
    # Pearson of x and x^2: cov = 12, var_x = 2, var_z = 374/5 - 121 → r = 12 / sqrt(2 * 74.8)
    assert pearson(x, z) == pytest.approx(12 / math.sqrt(2 * 74.8))
    assert spearman([1.0, 1.0, 2.0], [1.0, 2.0, 3.0]) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_sts_on_a_hand_made_file() -> None:
    emb = {"a": [1.0, 0.0], "b": [1.0, 0.1], "c": [0.0, 1.0], "d": [-1.0, 0.0], "e": [0.7, 0.7]}
    pairs = [("a", "b", 5.0), ("a", "c", 2.5), ("a", "d", 0.0), ("a", "e", 4.0)]
    calls: list[list[str]] = []

    def encode(texts: list[str]) -> torch.Tensor:
        calls.append(texts)
        return torch.tensor([emb[t] for t in texts])

    out = evaluate_sts(encode, [p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs])
    assert calls == [["a", "b", "c", "d", "e"]]  # each distinct sentence encoded once
    cos = [0.995037, 0.0, -1.0, 0.707107]
    assert out["spearman"] == pytest.approx(1.0)
    assert out["pearson"] == pytest.approx(pearson(cos, [5.0, 2.5, 0.0, 4.0]), abs=1e-5)
    assert out["pairs"] == 4
    with pytest.raises(UserError):
        sts_scores(torch.zeros(3, 2), torch.zeros(2, 2), [1.0, 2.0, 3.0])


def test_ranking_metric_sums_by_hand() -> None:
    # query 0: relevant {2, 5}; ranking 7, 2, 3, 5 → hits at ranks 2 and 4
    # query 1: relevant {1};    ranking 1, ...     → hit at rank 1
    # query 2: relevant {9};    ranking without 9  → nothing
    hits = torch.tensor([[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    sums = ranking_metric_sums(hits, torch.tensor([2, 1, 1]), [1, 4])
    assert set(sums) == {f"{m}@{k}" for m in METRICS for k in (1, 4)}
    m = {key: value / 3 for key, value in sums.items()}
    assert m["recall@1"] == pytest.approx((0 + 1 + 0) / 3)
    assert m["recall@4"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    assert m["precision@1"] == pytest.approx((0 + 1 + 0) / 3)
    assert m["precision@4"] == pytest.approx((2 / 4 + 1 / 4 + 0) / 3)
    assert m["hit@4"] == pytest.approx(2 / 3)
    assert m["mrr@1"] == pytest.approx(1 / 3)
    assert m["mrr@4"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    dcg0 = 1 / math.log2(3) + 1 / math.log2(5)
    idcg0 = 1 + 1 / math.log2(3)
    assert m["ndcg@4"] == pytest.approx((dcg0 / idcg0 + 1.0 + 0.0) / 3)
    assert m["ndcg@1"] == pytest.approx(1 / 3)
    # a list shorter than k: the missing ranks are misses, precision still divides by k
    short = ranking_metric_sums(hits[:, :2], torch.tensor([2, 1, 1]), [4])
    assert short["recall@4"] == pytest.approx(0.5 + 1.0)
    assert short["precision@4"] == pytest.approx(2 / 4)
    assert short["ndcg@4"] == pytest.approx(1 / math.log2(3) / idcg0 + 1.0)
    with pytest.raises(ValueError, match="at least one relevant"):
        ranking_metric_sums(hits, torch.tensor([2, 1, 0]), [1])


def test_retrieval_from_embeddings() -> None:
    corpus = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]])
    queries = torch.tensor([[1.0, 0.1], [0.0, 2.0]])
    m = retrieval_metrics(queries, corpus, torch.tensor([0, 3]), ks=[1, 2])
    # query 0 ranks 0, 3, ...: hit at 1; query 1 ranks 1, 3: relevant 3 at rank 2
    assert m["hit@1"] == pytest.approx(0.5) and m["hit@2"] == pytest.approx(1.0)
    assert m["mrr@2"] == pytest.approx((1 + 0.5) / 2)
    m10 = retrieval_metrics(queries, corpus, [[0], [1, 3]], ks=[10])  # k beyond the corpus size
    assert m10["recall@10"] == pytest.approx(1.0) and m10["ndcg@10"] == pytest.approx(1.0)
    with pytest.raises(UserError, match="relevant item ids"):
        retrieval_metrics(queries, corpus, torch.tensor([0, 7]))


@pytest.mark.parametrize(("n_items", "ks"), [(30, [1, 5, 10]), (6, [3, 10])])
def test_retrieval_and_recommendation_evaluations_agree(n_items: int, ks: list[int]) -> None:
    """One ranking problem through both paths: users = queries, items = corpus, targets = relevant.

    Queries are the score rows and the corpus the identity, so both rank the same exact scores
    (distinct, no ties); some queries have no relevant item, and with 6 items k=10 is longer
    than the catalogue.
    """
    g = torch.Generator().manual_seed(0)
    n_queries = 40
    scores = torch.stack([torch.randperm(n_items, generator=g) for _ in range(n_queries)]).float()
    relevant = [
        torch.randperm(n_items, generator=g)[: int(torch.randint(0, 4, (1,), generator=g))].tolist()
        for _ in range(n_queries)
    ]
    assert any(not r for r in relevant) and any(len(r) > 1 for r in relevant)
    corpus = torch.eye(n_items)
    got = retrieval_metrics(scores, corpus, relevant, ks=ks, similarity="dot", chunk_size=5)
    targets = np.array([(q, i) for q, items in enumerate(relevant) for i in items])
    want = ranking_metrics(lambda u: scores[u], n_queries, n_items, targets, ks=ks, block_users=4)
    assert got["queries"] == want["users"] == sum(1 for r in relevant if r)
    keys = [f"{m}@{k}" for m in METRICS for k in ks]
    assert all(want[key] > 0.0 for key in keys)
    for key in keys:
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12), key
