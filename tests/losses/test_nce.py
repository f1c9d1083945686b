"""NCE and skip-gram negative sampling against naive loops, closed forms and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from contrastkit.errors import UserError
from contrastkit.losses import NCELoss, NegativeSamplingLoss, nce_loss, negative_sampling_loss


def _naive_sgns(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for i in range(pos.shape[0]):
        total = total - math.log(1 / (1 + math.exp(-float(pos[i]))))
        for j in range(neg.shape[1]):
            total = total - math.log(1 / (1 + math.exp(float(neg[i, j]))))
    return total / pos.shape[0]


def _naive_nce(pos: torch.Tensor, neg: torch.Tensor, lq_pos: torch.Tensor, lq_neg: torch.Tensor, k: int) -> float:
    """Gutmann & Hyvärinen: P(data | x) = p / (p + k q) with p = exp(s)."""
    total = 0.0
    for i in range(pos.shape[0]):
        p, q = math.exp(float(pos[i])), math.exp(float(lq_pos[i]))
        total -= math.log(p / (p + k * q))
        for j in range(neg.shape[1]):
            p, q = math.exp(float(neg[i, j])), math.exp(float(lq_neg[i, j]))
            total -= math.log(k * q / (p + k * q))
    return total / pos.shape[0]


def test_negative_sampling_loss_matches_a_loop_and_its_closed_form() -> None:
    torch.manual_seed(0)
    pos, neg = torch.randn(7, dtype=torch.float64) * 2, torch.randn(7, 4, dtype=torch.float64) * 2
    assert float(negative_sampling_loss(pos, neg)) == pytest.approx(float(_naive_sgns(pos, neg)), rel=1e-12)
    # zero logits: every term is log 2, K + 1 of them per row
    assert float(negative_sampling_loss(torch.zeros(3), torch.zeros(3, 5))) == pytest.approx(6 * math.log(2))
    rows = negative_sampling_loss(pos, neg, reduction="none")
    assert rows.shape == (7,) and float(rows.sum()) == pytest.approx(float(negative_sampling_loss(pos, neg, reduction="sum")))
    # large logits stay finite
    assert torch.isfinite(negative_sampling_loss(torch.tensor([-1e4]), torch.tensor([[1e4]])))


def test_nce_loss_matches_gutmann_hyvarinen_and_reduces_to_sgns() -> None:
    torch.manual_seed(1)
    pos, neg = torch.randn(6, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    lq_pos, lq_neg = torch.rand(6, dtype=torch.float64).log(), torch.rand(6, 3, dtype=torch.float64).log()
    got = nce_loss(pos, neg, lq_pos, lq_neg)
    assert float(got) == pytest.approx(_naive_nce(pos, neg, lq_pos, lq_neg, 3), rel=1e-12)
    # num_noise is k of the correction; with log(k q) = 0 NCE is SGNS
    k = 8
    assert float(nce_loss(pos, neg, lq_pos, lq_neg, num_noise=k)) == pytest.approx(
        _naive_nce(pos, neg, lq_pos, lq_neg, k), rel=1e-12
    )
    zero_pos, zero_neg = torch.full_like(pos, -math.log(3)), torch.full_like(neg, -math.log(3))
    torch.testing.assert_close(nce_loss(pos, neg, zero_pos, zero_neg), negative_sampling_loss(pos, neg))


def test_gradients() -> None:
    torch.manual_seed(2)
    pos = torch.randn(5, dtype=torch.float64, requires_grad=True)
    neg = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    lq_pos, lq_neg = torch.rand(5, dtype=torch.float64).log(), torch.rand(5, 3, dtype=torch.float64).log()
    assert torch.autograd.gradcheck(lambda a, b: negative_sampling_loss(a, b), (pos, neg))
    assert torch.autograd.gradcheck(lambda a, b: nce_loss(a, b, lq_pos, lq_neg), (pos, neg))
    # the closed-form gradient of SGNS: σ(s) − 1 for a positive, σ(n) for a negative (sum reduction)
    negative_sampling_loss(pos, neg, reduction="sum").backward()
    torch.testing.assert_close(pos.grad, torch.sigmoid(pos.detach()) - 1)
    torch.testing.assert_close(neg.grad, torch.sigmoid(neg.detach()))


def test_modules_and_errors() -> None:
    torch.manual_seed(3)
    pos, neg = torch.randn(4), torch.randn(4, 2)
    torch.testing.assert_close(NegativeSamplingLoss()(pos, neg), negative_sampling_loss(pos, neg))
    log_q = torch.rand(10).log()
    ids_pos, ids_neg = torch.randint(0, 10, (4,)), torch.randint(0, 10, (4, 2))
    torch.testing.assert_close(NCELoss(log_q)(pos, neg, ids_pos, ids_neg), nce_loss(pos, neg, log_q[ids_pos], log_q[ids_neg]))
    with pytest.raises(UserError, match=r"positive logits \(N,\) and negative logits \(N, K\)"):
        negative_sampling_loss(torch.zeros(3), torch.zeros(4, 2))
    with pytest.raises(UserError, match="log-noise probabilities shaped like the logits"):
        nce_loss(pos, neg, torch.zeros(3), torch.zeros(4, 2))
    with pytest.raises(UserError, match="unknown reduction 'avg'"):
        negative_sampling_loss(pos, neg, reduction="avg")
