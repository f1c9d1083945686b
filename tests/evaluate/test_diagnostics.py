"""Collapse diagnostics: closed forms, a naive uniformity loop, and the collapse warning."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from contrastkit.diagnostics import (
    alignment,
    collapse_stats,
    effective_rank,
    normalised_std,
    uniformity,
)
from contrastkit.training.callbacks import CollapseMonitor


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


class _Trainer:
    """What the monitor reads of the trainer: the step just done."""

    def __init__(self) -> None:
        self.step = 0


def test_monitor_warns_once_after_patience_of_logged_steps() -> None:
    mon, trainer = CollapseMonitor(patience=2), _Trainer()
    healthy = {"emb_std": 0.9, "eff_rank": 10.0}
    collapsed = {"emb_std": 0.01, "eff_rank": 1.0}
    line = {"emb_std": 0.9, "eff_rank": 1.2}  # spread, but all on a line: collapse too

    def step(logs: dict[str, float] | None) -> None:
        trainer.step += 1
        mon.on_step(trainer, logs)

    step(collapsed)
    step(healthy)  # resets the count
    step(collapsed)
    step(None)  # a step that is not logged neither counts nor resets
    step({"loss": 1.0})  # a logged step without diagnostics: the same
    assert mon.collapsed_at is None and mon.bad == 1
    # the monitor's state survives a checkpoint: a resumed run keeps counting
    resumed = CollapseMonitor(patience=2)
    resumed.load_state_dict(mon.state_dict())
    with pytest.warns(RuntimeWarning, match="representation collapse at step 6"):
        trainer.step += 1
        resumed.on_step(trainer, line)
    assert resumed.collapsed_at == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        trainer.step += 1
        resumed.on_step(trainer, collapsed)
    assert resumed.collapsed_at == 6
