"""NNCLR: the support set's nearest-neighbour lookup and the loss against loops written here,
and the support set's FIFO of past projections."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastkit.methods import NNCLR
from contrastkit.methods.nnclr import nearest_neighbours

pytestmark = pytest.mark.usefixtures("one_thread")


def _encoder() -> nn.Module:
    enc = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    enc.out_dim = 4  # type: ignore[assignment]
    return enc


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_nearest_neighbour_is_the_support_row_of_highest_cosine() -> None:
    torch.manual_seed(0)
    z, support = torch.randn(5, 3), torch.randn(9, 3) * torch.rand(9, 1) * 4  # lengths differ: cosine, not dot
    got = nearest_neighbours(z, support)
    for i in range(5):
        best = max(range(9), key=lambda j: _cos(z[i].tolist(), support[j].tolist()))
        torch.testing.assert_close(got[i], F.normalize(support[best], dim=0))


def test_nnclr_loss_matches_a_loop_and_the_support_set_takes_view_one() -> None:
    torch.manual_seed(1)
    model = NNCLR(_encoder(), 4, projection_dim=3, projection_hidden_dim=8, predictor_hidden_dim=8, support_set_size=10,
                  temperature=0.5)
    views = [torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8), torch.randn(4, 1, 4, 4)]  # 2 global, 1 local
    batch = {"views": views, "global_views": 2}
    model.training_step(batch)
    model.training_step(batch)
    assert len(model.support) == 8  # the first view's projections of both steps
    support = model.support.keys().clone()
    out = model.training_step(batch)
    with torch.no_grad():
        # the encoder once per view size, the projector on every view together, as the step does
        z = list(model.projector(torch.cat([model.encoder(torch.cat(views[:2])), model.encoder(views[2])])).chunk(3))
        p = list(model.predictor(torch.cat(z)).chunk(3))
    total, pairs = 0.0, 0
    for i in range(2):  # the queries: neighbours of the global views
        for v in range(3):
            if v == i:
                continue
            pairs += 1
            for b in range(4):
                nn_row = max(support.tolist(), key=lambda s, b=b: _cos(z[i][b].tolist(), s))
                logits = [_cos(nn_row, p[v][c].tolist()) / 0.5 for c in range(4)]
                total -= (logits[b] - math.log(sum(math.exp(x) for x in logits))) / 4
    assert math.isclose(float(out.loss.detach()), total / pairs, rel_tol=1e-4)
    assert len(model.support) == 10  # FIFO: the oldest overwritten
    torch.testing.assert_close(model.support.queue[8:10], F.normalize(z[0][:2], dim=1))
    torch.testing.assert_close(model.support.queue[:2], F.normalize(z[0][2:], dim=1))
