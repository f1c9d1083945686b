"""Losses without negatives (BYOL / SimSiam regression, Barlow Twins, VICReg) against naive
loops and closed forms, with gradients."""

from __future__ import annotations

import math

import torch

from contrastkit.losses import (
    barlow_twins_loss,
    covariance_term,
    cross_correlation,
    negative_cosine_loss,
    normalized_mse_loss,
    variance_term,
    vicreg_loss,
)


def _pair(n: int = 12, d: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)


def test_normalized_mse_matches_loop_and_stops_target_gradient() -> None:
    p, z = _pair()
    p.requires_grad_(True)
    z.requires_grad_(True)
    loss = normalized_mse_loss(p, z)
    pd, zd = p.detach(), z.detach()
    ref = sum(float(((pd[i] / pd[i].norm() - zd[i] / zd[i].norm()) ** 2).sum()) for i in range(len(p))) / len(p)
    assert math.isclose(float(loss.detach()), ref, rel_tol=1e-6)
    loss.backward()
    assert p.grad is not None and z.grad is None


def test_negative_cosine_is_half_normalized_mse_minus_one() -> None:
    p, z = _pair(seed=1)
    ref = -sum(float(torch.dot(p[i], z[i]) / (p[i].norm() * z[i].norm())) for i in range(len(p))) / len(p)
    assert math.isclose(float(negative_cosine_loss(p, z)), ref, rel_tol=1e-6)
    assert math.isclose(float(negative_cosine_loss(p, z)), float(normalized_mse_loss(p, z)) / 2 - 1, rel_tol=1e-6)
    assert math.isclose(float(negative_cosine_loss(z, z)), -1.0, rel_tol=1e-6)


def _naive_barlow(z1: torch.Tensor, z2: torch.Tensor, lam: float) -> float:
    n, d = z1.shape
    a = [(z1[:, j] - z1[:, j].mean()) / math.sqrt(float(z1[:, j].var(unbiased=False)) + 1e-5) for j in range(d)]
    b = [(z2[:, j] - z2[:, j].mean()) / math.sqrt(float(z2[:, j].var(unbiased=False)) + 1e-5) for j in range(d)]
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = float((a[i] * b[j]).sum()) / n
            loss += (1 - c) ** 2 if i == j else lam * c**2
    return loss


def test_barlow_twins_matches_loop_and_gradcheck() -> None:
    z1, z2 = _pair(10, 5, seed=2)
    assert math.isclose(float(barlow_twins_loss(z1, z2, lambda_offdiag=0.3)), _naive_barlow(z1, z2, 0.3), rel_tol=1e-6)
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: barlow_twins_loss(a, b, lambda_offdiag=0.3), (z1, z2))


def test_barlow_twins_is_zero_for_identical_decorrelated_views() -> None:
    # columns 1..7 of an 8x8 Hadamard matrix: zero mean, unit variance, mutually orthogonal
    h = torch.tensor([[1.0]], dtype=torch.float64)
    for _ in range(3):
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    z = h[:, 1:]
    torch.testing.assert_close(cross_correlation(z, z, eps=0.0), torch.eye(7, dtype=torch.float64))
    assert float(barlow_twins_loss(z, z, eps=0.0)) < 1e-12


def test_vicreg_terms_match_loops() -> None:
    z1, z2 = _pair(9, 4, seed=3)
    n, d = z1.shape
    var_ref = sum(max(0.0, 1 - math.sqrt(float(z1[:, j].var()) + 1e-4)) for j in range(d)) / d
    assert math.isclose(float(variance_term(z1)), var_ref, rel_tol=1e-6)
    zc = z1 - z1.mean(0)
    cov_ref = 0.0
    for i in range(d):
        for j in range(d):
            if i != j:
                cov_ref += (float((zc[:, i] * zc[:, j]).sum()) / (n - 1)) ** 2
    assert math.isclose(float(covariance_term(z1)), cov_ref / d, rel_tol=1e-6)
    loss, parts = vicreg_loss(z1.clone().requires_grad_(True), z2, sim_weight=2.0, var_weight=3.0, cov_weight=4.0)
    inv = float(((z1 - z2) ** 2).mean())
    expected = 2 * inv + 3 * (float(variance_term(z1)) + float(variance_term(z2))) / 2 + 4 * (
        float(covariance_term(z1)) + float(covariance_term(z2))
    )
    assert loss.requires_grad and math.isclose(float(loss.detach()), expected, rel_tol=1e-6)
    # the parts are scalar tensors (logged as numbers by the loop on logged steps only)
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 and not v.requires_grad for v in parts.values())
    assert math.isclose(float(parts["invariance"]), inv, rel_tol=1e-6)
    assert math.isclose(float(parts["variance"]), (float(variance_term(z1)) + float(variance_term(z2))) / 2, rel_tol=1e-6)
    assert math.isclose(float(parts["covariance"]), float(covariance_term(z1)) + float(covariance_term(z2)), rel_tol=1e-6)
    z1.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: vicreg_loss(a, z2)[0], (z1,))


def test_vicreg_variance_hinge_is_zero_for_spread_dimensions_and_one_for_a_point() -> None:
    z = torch.randn(64, 8, dtype=torch.float64) * 3.0
    assert float(variance_term(z)) == 0.0
    point = torch.ones(64, 8, dtype=torch.float64)
    assert math.isclose(float(variance_term(point)), 1 - math.sqrt(1e-4), rel_tol=1e-9)
