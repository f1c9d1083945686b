"""Similarity and distance matrices against per-pair formulas, gradients at zero distance."""

from __future__ import annotations

import math

import pytest
import torch

from contrastkit.errors import UserError
from contrastkit.similarity import (
    SIMILARITIES,
    distance_matrix,
    get_similarity,
    paired_distance,
    pairwise_distance,
    pairwise_similarity,
)


def _naive(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    out = torch.empty(a.shape[0], b.shape[0], dtype=torch.float64)
    for i in range(a.shape[0]):
        for j in range(b.shape[0]):
            x, y = a[i].tolist(), b[j].tolist()
            dot = sum(p * q for p, q in zip(x, y, strict=True))
            if metric == "dot":
                out[i, j] = dot
            elif metric == "cosine":
                out[i, j] = dot / math.sqrt(sum(p * p for p in x) * sum(q * q for q in y))
            else:
                out[i, j] = -math.sqrt(sum((p - q) ** 2 for p, q in zip(x, y, strict=True)))
    return out


@pytest.mark.parametrize("metric", ["cosine", "dot", "neg_euclidean"])
def test_pairwise_similarity_matches_naive(metric: str) -> None:
    torch.manual_seed(0)
    a, b = torch.randn(5, 7), torch.randn(4, 7)
    got = pairwise_similarity(a, b, metric)
    assert got.shape == (5, 4)
    torch.testing.assert_close(got.double(), _naive(a, b, metric), atol=1e-5, rtol=1e-5)


def test_registry_and_unknown_name() -> None:
    assert set(SIMILARITIES) == {"cosine", "dot", "neg_euclidean"}
    assert get_similarity("dot") is SIMILARITIES["dot"]
    with pytest.raises(UserError, match=r"cosin.*did you mean 'cosine'.*allowed"):
        get_similarity("cosin")


def test_shape_mismatch_names_shapes() -> None:
    with pytest.raises(UserError, match=r"\(3, 4\) and \(2, 5\)"):
        pairwise_similarity(torch.zeros(3, 4), torch.zeros(2, 5))
    with pytest.raises(UserError, match=r"\(3,\)"):
        pairwise_distance(torch.zeros(3))


def test_distance_self_diagonal_is_zero_with_finite_gradient() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    d = pairwise_distance(x)
    assert torch.all(d.diagonal() == 0)
    d.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # duplicated rows in two different tensors: zero distance, zero (not NaN) gradient there
    a = torch.ones(1, 3, requires_grad=True)
    dist = pairwise_distance(a, torch.ones(1, 3))
    dist.sum().backward()
    assert dist.item() == 0 and a.grad is not None and torch.all(a.grad == 0)


def test_neg_euclidean_gradient_equals_unit_direction() -> None:
    a = torch.tensor([[3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, 2, dtype=torch.float64)
    pairwise_similarity(a, b, "neg_euclidean").sum().backward()
    assert a.grad is not None
    torch.testing.assert_close(a.grad, torch.tensor([[-0.6, -0.8]], dtype=torch.float64))


def test_pairwise_distance_gradcheck() -> None:
    torch.manual_seed(1)
    a = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: pairwise_distance(x, y), (a, b))


@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean", "cosine"])
def test_distance_matrix_and_paired_distance_agree(metric: str) -> None:
    torch.manual_seed(2)
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    full = distance_matrix(a, b, metric)
    torch.testing.assert_close(paired_distance(a, b, metric), full.diagonal(), atol=1e-5, rtol=1e-5)
    eu = -_naive(a, b, "neg_euclidean")
    expected = {"euclidean": eu, "squared_euclidean": eu**2, "cosine": 1 - _naive(a, b, "cosine")}
    torch.testing.assert_close(full.double(), expected[metric], atol=1e-5, rtol=1e-5)


def test_half_inputs_compute_in_float32() -> None:
    torch.manual_seed(3)
    a = torch.randn(4, 8)
    d16 = pairwise_distance(a.to(torch.bfloat16))
    assert d16.dtype == torch.float32
    torch.testing.assert_close(d16, pairwise_distance(a.to(torch.bfloat16).float()))
    with pytest.raises(UserError, match="unknown distance"):
        distance_matrix(a, metric="manhattan")
