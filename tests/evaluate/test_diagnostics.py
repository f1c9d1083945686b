"""Collapse diagnostics: closed forms, a naive uniformity loop, and the collapse warning."""

from __future__ import annotations

import math

import pytest
import torch

from contrastkit.diagnostics import (
    CollapseMonitor,
    alignment,
    collapse_stats,
    effective_rank,
    normalised_std,
    uniformity,
)


def _signed_basis(d: int) -> torch.Tensor:
    eye = torch.eye(d, dtype=torch.float64)
    return torch.cat([eye, -eye])


def test_spread_embeddings_have_full_rank_and_unit_std() -> None:
    z = _signed_basis(16)
    assert effective_rank(z) == pytest.approx(16.0, rel=1e-6)
    assert normalised_std(z) == pytest.approx(math.sqrt(32 / 31), rel=1e-6)  # unbiased std, D=16


def test_collapsed_embeddings() -> None:
    point = torch.ones(50, 8) + 1e-9 * torch.randn(50, 8)
    assert normalised_std(point) < 1e-6
    assert effective_rank(torch.ones(50, 8)) == 1.0
    line = torch.randn(50, 1) * torch.tensor([[1.0, 2.0, 0.5, 0.0]])
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-3)


def test_alignment_closed_forms() -> None:
    z = torch.randn(20, 5)
    assert alignment(z, 3 * z) == pytest.approx(0.0, abs=1e-10)
    assert alignment(z, -z) == pytest.approx(4.0, rel=1e-6)


def test_uniformity_matches_pair_loop() -> None:
    z = torch.randn(7, 3, dtype=torch.float64)
    zn = z / z.norm(dim=1, keepdim=True)
    pairs = [math.exp(-2 * float((zn[i] - zn[j]).pow(2).sum())) for i in range(7) for j in range(i + 1, 7)]
    assert uniformity(z) == pytest.approx(math.log(sum(pairs) / len(pairs)), rel=1e-9)
    assert uniformity(torch.ones(5, 3)) == pytest.approx(0.0, abs=1e-9)  # all in one point: the maximum


def test_collapse_stats_keys() -> None:
    z1, z2 = torch.randn(10, 4), torch.randn(10, 4)
    assert set(collapse_stats(z1, z2)) == {"emb_std", "eff_rank", "uniformity", "alignment"}
    assert "alignment" not in collapse_stats(z1)


def test_monitor_warns_once_after_patience() -> None:
    mon = CollapseMonitor(patience=2)
    healthy = {"emb_std": 0.9, "eff_rank": 10.0}
    collapsed = {"emb_std": 0.01, "eff_rank": 1.0}
    mon(1, collapsed)
    mon(2, healthy)  # resets the count
    mon(3, collapsed)
    assert mon.collapsed_at is None
    with pytest.warns(RuntimeWarning, match="representation collapse at step 4"):
        mon(4, collapsed)
    mon(5, collapsed)  # no second warning
    assert mon.collapsed_at == 4
