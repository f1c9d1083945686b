"""Blocked and faiss kNN search give the same predictions as the one-block implementation of
contrastkit 0.1 (the full similarity row of each test block, one topk)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from contrastkit.errors import UserError
from contrastkit.evaluate import knn_evaluate, knn_predict

HAS_FAISS = importlib.util.find_spec("faiss") is not None

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only spins


def _previous(train: torch.Tensor, labels: torch.Tensor, test: torch.Tensor, c: int, k: int, t: float) -> torch.Tensor:
    """The naive reference: one test row at a time against the whole bank, votes summed per class
    (what contrastkit 0.1's knn_predict computed in blocks of 64 rows)."""
    bank = F.normalize(train, dim=1)
    k = min(k, bank.shape[0])
    preds = []
    for row in F.normalize(test, dim=1):
        top_sim, top_idx = (bank @ row).topk(k)
        votes = torch.zeros(c).index_add_(0, labels[top_idx], (top_sim / t).exp())
        preds.append(int(votes.argmax()))
    return torch.tensor(preds)


def _data(n_train: int = 700, n_test: int = 300, d: int = 16, c: int = 7) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(c, d, generator=g)
    y_train = torch.randint(0, c, (n_train,), generator=g)
    y_test = torch.randint(0, c, (n_test,), generator=g)
    x_train = centers[y_train] + 1.5 * torch.randn(n_train, d, generator=g)
    x_test = centers[y_test] + 1.5 * torch.randn(n_test, d, generator=g)
    return x_train, y_train, x_test, y_test


@pytest.mark.parametrize(("k", "batch", "bank_block"), [(200, 50, 64), (5, 70, 3), (1, 300, 1000), (50, 128, 50)])
def test_blocked_torch_search_matches_previous(k: int, batch: int, bank_block: int) -> None:
    x_train, y_train, x_test, _ = _data()
    want = _previous(x_train, y_train, x_test, 7, k, 0.1)
    got = knn_predict(
        x_train, y_train, x_test, num_classes=7, k=k, batch_size=batch, bank_block=bank_block, backend="torch"
    )
    assert torch.equal(got, want)
    # the neighbours themselves, not only the votes, survive the block merges
    from contrastkit.evaluate.knn import _topk_torch

    bank, queries = F.normalize(x_train, dim=1), F.normalize(x_test, dim=1)
    vals, idx = _topk_torch(bank, queries, k, batch, bank_block)
    ref_vals, ref_idx = (queries @ bank.T).topk(k, dim=1)
    torch.testing.assert_close(vals, ref_vals)
    assert torch.equal(idx, ref_idx)


@pytest.mark.skipif(not HAS_FAISS, reason="faiss is not installed (pip install 'contrastkit[faiss]')")
@pytest.mark.parametrize("k", [1, 20, 200])
def test_faiss_matches_previous(k: int) -> None:
    x_train, y_train, x_test, y_test = _data()
    want = _previous(x_train, y_train, x_test, 7, k, 0.1)
    got = knn_predict(x_train, y_train, x_test, num_classes=7, k=k, backend="faiss")
    assert torch.equal(got, want)
    auto = knn_evaluate(x_train, y_train, x_test, y_test, num_classes=7, k=k)
    assert auto["accuracy"] == pytest.approx(float((want == y_test).float().mean()))


def test_k_larger_than_bank_and_errors() -> None:
    x_train, y_train, x_test, _ = _data(n_train=30, n_test=20)
    for backend in ("torch", "auto"):
        got = knn_predict(x_train, y_train, x_test, num_classes=7, k=500, backend=backend, bank_block=7)
        assert torch.equal(got, _previous(x_train, y_train, x_test, 7, 30, 0.1))
    with pytest.raises(UserError, match="knn backend 'annoy'"):
        knn_predict(x_train, y_train, x_test, num_classes=7, backend="annoy")
    with pytest.raises(UserError, match="bank_block must be a positive integer"):
        knn_predict(x_train, y_train, x_test, num_classes=7, bank_block=0)


def test_evaluate_passes_the_search_options_through() -> None:
    x_train, y_train, x_test, y_test = _data(n_train=120, n_test=40)
    default = knn_evaluate(x_train, y_train, x_test, y_test, num_classes=7, backend="torch")
    assert default["k"] == 120 and default["temperature"] == 0.1  # k=200 clipped to the bank
    want = _previous(x_train, y_train, x_test, 7, 9, 0.5)
    res = knn_evaluate(
        x_train, y_train, x_test, y_test, num_classes=7, k=9, temperature=0.5, batch_size=8,
        backend="torch", bank_block=16, device="cpu",
    )
    assert res["k"] == 9 and res["temperature"] == 0.5
    assert res["accuracy"] == pytest.approx(float((want == y_test).float().mean()))
    with pytest.raises(UserError, match="bank_block must be a positive integer"):
        knn_evaluate(x_train, y_train, x_test, y_test, num_classes=7, bank_block=0)
