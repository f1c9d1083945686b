"""Margin contrastive and triplet losses against naive pair / triple loops; O(B²) memory."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from contrastkit.errors import UserError
from contrastkit.losses import (
    ContrastiveMarginLoss,
    TripletMarginLoss,
    contrastive_margin_loss,
    pair_margin_loss,
    triplet_margin_loss,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: a second thread only spins

DISTS = ["euclidean", "squared_euclidean", "cosine"]


def _dist(x: torch.Tensor, y: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "cosine":
        return 1 - (x @ y) / (x.norm() * y.norm())
    d2 = ((x - y) ** 2).sum()
    return d2 if metric == "squared_euclidean" else d2.sqrt()


def _batch(seed: int = 0, b: int = 12, dim: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    e = torch.randn(b, dim, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4][:b])  # class 4: no positive
    return e, labels


def naive_triplet(
    e: torch.Tensor, labels: torch.Tensor, margin: float, mining: str, metric: str
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """(mean loss, per-anchor totals, terms, active terms) from explicit loops."""
    b = len(labels)
    d = [[_dist(e[i], e[j], metric) for j in range(b)] for i in range(b)]
    per_anchor = [e.new_zeros(()) for _ in range(b)]
    terms = active = 0
    for a in range(b):
        pos = [p for p in range(b) if p != a and labels[p] == labels[a]]
        neg = [n for n in range(b) if labels[n] != labels[a]]
        if not pos or not neg:
            continue
        if mining == "batch_hard":
            hp = torch.stack([d[a][p] for p in pos]).max()
            hn = torch.stack([d[a][n] for n in neg]).min()
            loss = torch.relu(hp - hn + margin)
            per_anchor[a] = loss
            terms += 1
            active += int(loss > 0)
            continue
        for p in pos:
            if mining == "batch_all":
                for n in neg:
                    loss = torch.relu(d[a][p] - d[a][n] + margin)
                    per_anchor[a] = per_anchor[a] + loss
                    terms += 1
                    active += int(loss > 0)
            else:
                farther = [d[a][n] for n in neg if d[a][n] > d[a][p]]
                chosen = min(farther) if farther else min(d[a][n] for n in neg)
                loss = torch.relu(d[a][p] - chosen + margin)
                per_anchor[a] = per_anchor[a] + loss
                terms += 1
                active += int(loss > 0)
    total = torch.stack(per_anchor)
    count = active if mining == "batch_all" else terms
    return total.sum() / max(count, 1), total, terms, active


@pytest.mark.parametrize("mining", ["batch_hard", "batch_all", "semi_hard"])
@pytest.mark.parametrize("metric", DISTS)
def test_triplet_matches_naive_loops_values_and_gradients(mining: str, metric: str) -> None:
    e, labels = _batch(1, dim=2)
    margin = 0.1
    want, want_rows, terms, active = naive_triplet(e, labels, margin, mining, metric)
    got, stats = triplet_margin_loss(
        e, labels, margin, mining=mining, distance=metric, return_stats=True
    )
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    (g_got,) = torch.autograd.grad(got, e)
    (g_want,) = torch.autograd.grad(want, e)
    torch.testing.assert_close(g_got, g_want, atol=1e-5, rtol=1e-5)
    assert 0 < active < terms  # the batch exercises both active and inactive terms
    assert stats["num_triplets"].item() == terms and stats["num_active"].item() == active
    assert stats["fraction_active"].item() == pytest.approx(active / terms)
    rows = triplet_margin_loss(e, labels, margin, mining=mining, distance=metric, reduction="none")
    torch.testing.assert_close(rows, want_rows.detach(), atol=1e-5, rtol=1e-5)
    total = triplet_margin_loss(e, labels, margin, mining=mining, distance=metric, reduction="sum")
    torch.testing.assert_close(total, want_rows.sum().detach(), atol=1e-5, rtol=1e-5)


def test_semi_hard_uses_both_semi_hard_and_fallback_negatives() -> None:
    # 1-D points make the choice explicit: anchor 0 at 0, positive at 1, negatives at 0.5, 3
    e = torch.tensor([[0.0], [1.0], [0.5], [3.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 2])
    # (0,1): d_ap=1, negatives farther than 1: {3} -> relu(1 - 3 + 2.5) = 0.5
    # (1,0): d_ap=1, negatives 0.5 and 2: farther {2} -> relu(1 - 2 + 2.5) = 1.5
    got = triplet_margin_loss(e, labels, 2.5, mining="semi_hard", reduction="none")
    torch.testing.assert_close(got, torch.tensor([0.5, 1.5, 0.0, 0.0]))
    # no negative farther than the positive: fall back to the hardest (closest) negative
    e2 = torch.tensor([[0.0], [5.0], [0.5], [3.0]])
    got2 = triplet_margin_loss(e2, labels, 0.2, mining="semi_hard", reduction="none")
    # (0,1): d_ap=5 > all negatives -> hardest 0.5 -> 4.7; (1,0): d_ap=5, negatives 4.5, 2 -> 2 -> 3.2
    torch.testing.assert_close(got2, torch.tensor([4.7, 3.2, 0.0, 0.0]))
    # a negative exactly as far as the positive is not "farther": the next one is used
    e3 = torch.tensor([[0.0], [1.0], [-1.0], [3.0]])
    got3 = triplet_margin_loss(e3, labels, 2.5, mining="semi_hard", reduction="none")
    # (0,1): negatives at 1 (tie) and 3 -> 3 -> 0.5; (1,0): negatives at 2, 2 -> 2 -> 1.5
    torch.testing.assert_close(got3, torch.tensor([0.5, 1.5, 0.0, 0.0]))


def test_triplet_gradcheck_float64() -> None:
    e, labels = _batch(2, b=6)
    for mining in ("batch_hard", "batch_all", "semi_hard"):
        assert torch.autograd.gradcheck(
            lambda x, m=mining: triplet_margin_loss(x, labels, 1.0, mining=m), (e,)
        )


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_large_batch_needs_only_quadratic_memory() -> None:
    b = 512
    torch.manual_seed(3)
    e = torch.randn(b, 16, requires_grad=True)
    labels = torch.randint(0, 32, (b,))
    # the monitor sees a cubic intermediate when there is one
    with _LargestTensor() as probe:
        d = torch.cdist(e[:40], e[:40])
        (d[:, :, None] - d[:, None, :]).relu().sum()
    assert probe.largest == 40**3
    for mining in ("batch_hard", "batch_all", "semi_hard"):
        with _LargestTensor() as mon:
            loss = triplet_margin_loss(e, labels, 0.2, mining=mining)
            loss.backward()
        assert torch.isfinite(loss) and loss > 0
        assert mon.largest <= b * (b + 1), (mining, mon.largest)


def naive_margin(
    e: torch.Tensor, labels: torch.Tensor, margin: float, metric: str
) -> tuple[torch.Tensor, torch.Tensor]:
    pos, neg, total = [], [], e.new_zeros(())
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            d = _dist(e[i], e[j], metric)
            if labels[i] == labels[j]:
                pos.append(d**2)
            else:
                neg.append(torch.relu(margin - d) ** 2)
    total = torch.stack(pos + neg).sum()
    return torch.stack(pos).mean() + torch.stack(neg).mean(), total


@pytest.mark.parametrize("metric", DISTS)
def test_margin_loss_matches_naive_pairs(metric: str) -> None:
    e, labels = _batch(4)
    margin = 0.5 if metric == "cosine" else 2.0
    want, want_sum = naive_margin(e, labels, margin, metric)
    got = contrastive_margin_loss(e, labels, margin, distance=metric)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    (g_got,) = torch.autograd.grad(got, e)
    (g_want,) = torch.autograd.grad(want, e)
    torch.testing.assert_close(g_got, g_want, atol=1e-5, rtol=1e-5)
    total = contrastive_margin_loss(e, labels, margin, distance=metric, reduction="sum")
    torch.testing.assert_close(total, want_sum.detach(), atol=1e-5, rtol=1e-5)
    pairs = contrastive_margin_loss(e, labels, margin, distance=metric, reduction="none")
    assert pairs.shape == (12, 12)
    torch.testing.assert_close(pairs, pairs.T)
    assert torch.all(pairs.diagonal() == 0)
    module = ContrastiveMarginLoss(margin, distance=metric)
    torch.testing.assert_close(module(e, labels), got)


def test_margin_loss_closed_forms_and_zero_distance_gradient() -> None:
    # two identical points of one class: loss 0, gradient 0 (not NaN)
    e = torch.ones(2, 3, requires_grad=True)
    loss = contrastive_margin_loss(e, torch.tensor([0, 0]))
    loss.backward()
    assert loss.item() == 0 and e.grad is not None and torch.all(e.grad == 0)
    # two identical points of different classes: (margin - 0)² and a finite gradient
    e = torch.ones(2, 3, requires_grad=True)
    loss = contrastive_margin_loss(e, torch.tensor([0, 1]), margin=1.5)
    loss.backward()
    assert loss.item() == pytest.approx(2.25) and torch.isfinite(e.grad).all()  # type: ignore[arg-type]
    # 1-D explicit pairs: distances 3 (same) and 0.5 (different, margin 2)
    x1 = torch.tensor([[0.0], [1.0]])
    x2 = torch.tensor([[3.0], [1.5]])
    same = torch.tensor([True, False])
    got = pair_margin_loss(x1, x2, same, margin=2.0, reduction="none")
    torch.testing.assert_close(got, torch.tensor([9.0, 2.25]))
    torch.testing.assert_close(pair_margin_loss(x1, x2, same, margin=2.0), torch.tensor(5.625))
    torch.testing.assert_close(
        pair_margin_loss(x1, x2, same, margin=2.0, reduction="sum"), torch.tensor(11.25)
    )


def test_pair_margin_loss_agrees_with_batch_form() -> None:
    e, labels = _batch(5, b=4)
    labels = torch.tensor([0, 1, 0, 1])
    i, j = torch.triu_indices(4, 4, offset=1)
    rows = pair_margin_loss(e[i], e[j], labels[i] == labels[j], margin=1.0, reduction="none")
    full = contrastive_margin_loss(e, labels, 1.0, reduction="none")
    torch.testing.assert_close(rows, full[i, j])


def test_no_valid_triplets_gives_zero() -> None:
    e = torch.randn(4, 3, requires_grad=True)
    for mining in ("batch_hard", "batch_all", "semi_hard"):
        loss = triplet_margin_loss(e, torch.arange(4), mining=mining)  # no positives
        assert loss.item() == 0.0
        loss.backward()
    loss = TripletMarginLoss(mining="batch_all")(
        e, torch.zeros(4, dtype=torch.long)
    )  # no negatives
    assert loss.item() == 0.0


def test_pair_losses_bad_inputs() -> None:
    e = torch.randn(4, 3)
    with pytest.raises(UserError, match=r"unknown mining 'hard'"):
        triplet_margin_loss(e, torch.arange(4), mining="hard")
    with pytest.raises(UserError, match=r"unknown distance 'l1'"):
        TripletMarginLoss(distance="l1")
    with pytest.raises(UserError, match=r"margin.*-1"):
        contrastive_margin_loss(e, torch.arange(4), margin=-1)
    with pytest.raises(UserError, match=r"\(4, 3\) and \(3,\)"):
        triplet_margin_loss(e, torch.arange(3))
    with pytest.raises(UserError, match=r"\(4, 3\) and \(5, 3\)"):
        pair_margin_loss(e, torch.randn(5, 3), torch.ones(4, dtype=torch.bool))
    with pytest.raises(UserError, match=r"unknown reduction"):
        ContrastiveMarginLoss(reduction="avg")
