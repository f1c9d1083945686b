"""Full-ranking metrics against hand-computed values and a naive per-user loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from contrastkit.evaluate.ranking import embedding_scorer, popularity_scorer, ranking_metrics


def test_hand_computed_single_user() -> None:
    # items ranked 4 > 3 > 2 > 1 > 0; item 4 is a training item (masked); targets: 3 and 0
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    m = ranking_metrics(lambda u: scores, 1, 5, np.array([[0, 3], [0, 0]]), [np.array([[0, 4]])], ks=[2, 4])
    # top-2 = [3, 2]: one hit at rank 1; top-4 = [3, 2, 1, 0]: hits at ranks 1 and 4
    assert m["recall@2"] == 0.5 and m["recall@4"] == 1.0
    assert m["precision@2"] == 0.5 and m["precision@4"] == 0.5
    assert m["hit@2"] == 1.0 and m["mrr@4"] == 1.0
    idcg = 1 + 1 / math.log2(3)
    assert m["ndcg@2"] == pytest.approx(1 / idcg)
    assert m["ndcg@4"] == pytest.approx((1 + 1 / math.log2(5)) / idcg)
    assert m["coverage@2"] == pytest.approx(2 / 5)  # items 3 and 2 were recommended


def test_mrr_and_users_without_targets() -> None:
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    targets = np.array([[0, 2], [1, 0]])  # user 0: item 2 (rank 3); user 1: item 0 (rank 4); user 2: none
    m = ranking_metrics(lambda u: scores[u], 3, 4, targets, ks=[2, 4])
    assert m["users"] == 2
    assert m["mrr@2"] == 0.0 and m["hit@2"] == 0.0
    assert m["mrr@4"] == pytest.approx((1 / 3 + 1 / 4) / 2)
    assert m["ndcg@4"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(5)) / 2)


def _naive(scores: np.ndarray, targets: set[tuple[int, int]], exclude: set[tuple[int, int]], k: int) -> dict[str, float]:
    sums = {"recall": 0.0, "ndcg": 0.0, "precision": 0.0, "hit": 0.0, "mrr": 0.0}
    users = sorted({u for u, _ in targets})
    for u in users:
        t = {i for uu, i in targets if uu == u}
        cand = [i for i in range(scores.shape[1]) if (u, i) not in exclude]
        ranked = sorted(cand, key=lambda i: -scores[u, i])[:k]
        hits = [1.0 if i in t else 0.0 for i in ranked]
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(t), k)))
        sums["recall"] += sum(hits) / len(t)
        sums["precision"] += sum(hits) / k
        sums["ndcg"] += dcg / idcg
        sums["hit"] += float(sum(hits) > 0)
        sums["mrr"] += next((1 / (r + 1) for r, h in enumerate(hits) if h), 0.0)
    return {f"{key}@{k}": v / len(users) for key, v in sums.items()}


@pytest.mark.parametrize("block", [1, 7, 1024])
def test_matches_naive_loop_in_any_block_size(block: int) -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 23, 40
    user_emb, item_emb = torch.randn(n_users, 8), torch.randn(n_items, 8)
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, n_users, 300), rng.integers(0, n_items, 300), strict=True)}
    pairs_l = sorted(pairs)
    rng.shuffle(pairs_l)
    train, test = pairs_l[:200], pairs_l[200:]
    scores = (user_emb @ item_emb.T).numpy()
    got = ranking_metrics(embedding_scorer(user_emb, item_emb), n_users, n_items, np.array(test),
                          [np.array(train)], ks=[5, 10], block_users=block)
    for k in (5, 10):
        ref = _naive(scores, set(test), set(train), k)
        for key, value in ref.items():
            assert got[key] == pytest.approx(value, abs=1e-9), key


def test_popularity_baseline_coverage_and_tail() -> None:
    pop = np.array([10, 8, 6, 1, 1, 0, 0, 0, 0, 0])
    targets = np.array([[0, 3], [1, 0], [2, 9]])
    exclude = np.array([[0, 0], [1, 1], [1, 2]])
    m = ranking_metrics(popularity_scorer(pop), 3, 10, targets, [exclude], ks=[2], popularity=pop)
    # top-2: user 0 -> [1, 2]; user 1 -> [0, 3] (1, 2 masked); user 2 -> [0, 1]
    assert m["coverage@2"] == pytest.approx(4 / 10)
    assert m["hit@2"] == pytest.approx(1 / 3)  # only user 1 hits (item 0)
    assert m["popularity@2"] == pytest.approx(((8 + 6) / 2 + (10 + 1) / 2 + (10 + 8) / 2) / 3)
    # the 20 % most popular items are 0 and 1: user 0 recommends one tail item (2), user 1 one (3)
    assert m["tail@2"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
