"""CoSENT, AnglE and the Matryoshka wrapper against naive loops written here (complex numbers
for AnglE's angle), and their gradients against finite differences."""

from __future__ import annotations

import math

import pytest
import torch

from contrastkit.errors import UserError
from contrastkit.losses import (
    AnglELoss,
    CoSENTLoss,
    MatryoshkaLoss,
    NTXentLoss,
    angle_loss,
    angle_ranking_loss,
    angle_similarity,
    cosent_loss,
    info_nce,
    matryoshka_loss,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _pairs(n: int = 7, d: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    x = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    y = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    scores = torch.tensor([4.5, 1.0, 3.2, 4.5, 2.0, 0.5, 3.2][:n], dtype=torch.float64)  # ties included
    return x, y, scores


def _num(t: torch.Tensor) -> float:
    return float(t.detach())


def _cos(u: list[float], v: list[float]) -> float:
    dot = sum(a * b for a, b in zip(u, v, strict=True))
    return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def naive_rank(sims: list[float], scores: list[float], scale: float) -> float:
    """log(1 + sum over (i, j) with s_i > s_j of exp(scale (sim_j - sim_i)))."""
    total = 1.0
    for i in range(len(sims)):
        for j in range(len(sims)):
            if scores[i] > scores[j]:
                total += math.exp(scale * (sims[j] - sims[i]))
    return math.log(total)


def naive_angle(u: list[float], v: list[float]) -> float:
    """|sum of the real and imaginary parts of (z / w) * |w| / |z||, z and w complex vectors."""
    k = len(u) // 2
    z = [complex(u[i], u[k + i]) for i in range(k)]
    w = [complex(v[i], v[k + i]) for i in range(k)]
    nz = math.sqrt(sum(abs(c) ** 2 for c in z))
    nw = math.sqrt(sum(abs(c) ** 2 for c in w))
    total = 0.0
    for a, b in zip(z, w, strict=True):
        q = a * b.conjugate() / nw**2 / (nz / nw)  # the quotient's parts, over the vector norms
        total += q.real + q.imag
    return abs(total)


def naive_in_batch(x: list[list[float]], y: list[list[float]], positive: list[bool], scale: float) -> float:
    """Each text of a positive pair against all other 2N - 1 texts, its partner the target; / 2N."""
    texts = x + y
    n = len(x)
    total = 0.0
    for i in range(2 * n):
        if not positive[i % n]:
            continue
        partner = (i + n) % (2 * n)
        logits = [scale * _cos(texts[i], texts[j]) for j in range(2 * n) if j != i]
        others = [j for j in range(2 * n) if j != i]
        total += -logits[others.index(partner)] + math.log(sum(math.exp(v) for v in logits))
    return total / (2 * n)


def test_cosent_equals_the_pair_loop() -> None:
    x, y, s = _pairs()
    xs, ys = x.tolist(), y.tolist()
    sims = [_cos(a, b) for a, b in zip(xs, ys, strict=True)]
    for scale in (20.0, 1.0):
        assert _num(cosent_loss(x, y, s, scale=scale)) == pytest.approx(naive_rank(sims, s.tolist(), scale), rel=1e-10)
    assert _num(CoSENTLoss()(x, y, s)) == pytest.approx(naive_rank(sims, s.tolist(), 20.0), rel=1e-10)
    # only the order of the scores matters; equal scores give log(1) = 0
    assert _num(cosent_loss(x, y, s * 10 + 3)) == pytest.approx(_num(cosent_loss(x, y, s)))
    assert _num(cosent_loss(x, y, torch.ones(7, dtype=torch.float64))) == 0.0
    with pytest.raises(UserError, match=r"scores of shape \(N,\) = \(7,\)"):
        cosent_loss(x, y, s[:3])


def test_angle_terms_and_composition_equal_the_loops() -> None:
    x, y, s = _pairs()
    xs, ys, ss = x.tolist(), y.tolist(), s.tolist()
    angles = [naive_angle(a, b) for a, b in zip(xs, ys, strict=True)]
    assert angle_similarity(x, y).tolist() == pytest.approx(angles, rel=1e-10)
    assert _num(angle_similarity(x[:1], x[:1])) == pytest.approx(1.0)  # identical: angle 0
    assert _num(angle_ranking_loss(x, y, s, scale=1.0)) == pytest.approx(naive_rank(angles, ss, 1.0), rel=1e-10)
    sims = [_cos(a, b) for a, b in zip(xs, ys, strict=True)]
    positive = [v >= 3 for v in ss]
    expected = {
        "cos": naive_rank(sims, ss, 20.0),
        "ibn": naive_in_batch(xs, ys, positive, 20.0),
        "angle": naive_rank(angles, ss, 1.0),
    }
    got = angle_loss(x, y, s, positive=s >= 3)
    assert _num(got) == pytest.approx(sum(expected.values()), rel=1e-9)
    weighted = AnglELoss(cosine_weight=0.5, ibn_weight=2.0, angle_weight=3.0)(x, y, s, s >= 3)
    assert _num(weighted) == pytest.approx(0.5 * expected["cos"] + 2 * expected["ibn"] + 3 * expected["angle"], rel=1e-9)
    only_ibn = angle_loss(x, y, s, cosine_weight=0, angle_weight=0)  # every pair positive by default
    assert _num(only_ibn) == pytest.approx(naive_in_batch(xs, ys, [True] * 7, 20.0), rel=1e-9)
    with pytest.raises(UserError, match="even D"):
        angle_similarity(x[:, :5], y[:, :5])
    with pytest.raises(UserError, match="ibn_weight must be >= 0"):
        AnglELoss(ibn_weight=-1)


@pytest.mark.parametrize("which", ["cosent", "angle"])
def test_gradients_match_finite_differences(which: str) -> None:
    x, y, s = _pairs(n=5, d=4, seed=1)

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if which == "cosent":
            return cosent_loss(a, b, s, scale=5.0)
        return angle_loss(a, b, s, positive=s >= 3, cosine_scale=5.0, ibn_scale=5.0)

    assert torch.autograd.gradcheck(fn, (x, y), eps=1e-6, atol=1e-6)


def test_matryoshka_is_the_weighted_sum_over_prefixes() -> None:
    torch.manual_seed(0)
    q, k = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)

    def nce(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return info_nce(a, b, temperature=0.1)

    parts: dict[int, torch.Tensor] = {}
    got = matryoshka_loss(nce, [q, k], [8, 4, 2], [1.0, 0.5, 0.25], parts=parts)
    expected = nce(q, k) + 0.5 * nce(q[:, :4], k[:, :4]) + 0.25 * nce(q[:, :2], k[:, :2])
    assert _num(got) == pytest.approx(_num(expected), rel=1e-12) and sorted(parts) == [2, 4, 8]
    nt_xent = NTXentLoss(temperature=0.1)
    wrapped = MatryoshkaLoss(nt_xent, dims=[8, 4])
    assert _num(wrapped(q, k)) == pytest.approx(_num(nt_xent(q, k) + nt_xent(q[:, :4], k[:, :4])))
    s = torch.arange(6, dtype=torch.float64)
    assert _num(MatryoshkaLoss(CoSENTLoss(), [4])(q, k, scores=s)) == pytest.approx(_num(cosent_loss(q[:, :4], k[:, :4], s)))
    with pytest.raises(UserError, match="exceed the embedding width 8"):
        matryoshka_loss(nce, [q, k], [16, 8])
    with pytest.raises(UserError, match="one per dim"):
        MatryoshkaLoss(nce, [8, 4], [1.0])
