"""SwAV: Sinkhorn–Knopp and the swapped-prediction loss against loops written here, the
prototypes (normalised, frozen at first), the queue, and a multi-crop step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastkit.errors import UserError
from contrastkit.methods import SwAV
from contrastkit.methods.swav import sinkhorn_knopp, swapped_prediction_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def _encoder() -> nn.Module:
    enc = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    enc.out_dim = 4  # type: ignore[assignment]
    return enc


def _naive_sinkhorn(scores: list[list[float]], eps: float, iterations: int) -> list[list[float]]:
    """The paper's algorithm entry by entry: Q[k][b] = exp(s[b][k] / eps), total 1, then rows to
    1/K and columns to 1/B in turn; codes[b][k] = B * Q[k][b]."""
    b, k = len(scores), len(scores[0])
    q = [[math.exp(scores[j][i] / eps) for j in range(b)] for i in range(k)]
    total = sum(sum(row) for row in q)
    q = [[x / total for x in row] for row in q]
    for _ in range(iterations):
        for i in range(k):
            r = sum(q[i])
            q[i] = [x / r / k for x in q[i]]
        for j in range(b):
            c = sum(q[i][j] for i in range(k))
            for i in range(k):
                q[i][j] = q[i][j] / c / b
    return [[q[i][j] * b for i in range(k)] for j in range(b)]


def test_sinkhorn_knopp_matches_a_loop_and_balances_the_prototypes() -> None:
    torch.manual_seed(0)
    scores = F.normalize(torch.randn(6, 4), dim=1) @ F.normalize(torch.randn(5, 4), dim=1).t()  # cosines
    codes = sinkhorn_knopp(scores, epsilon=0.1, iterations=3)
    want = torch.tensor(_naive_sinkhorn(scores.tolist(), 0.1, 3))
    torch.testing.assert_close(codes, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(6))  # each sample one unit of mass
    many = sinkhorn_knopp(scores, epsilon=0.1, iterations=200)
    torch.testing.assert_close(many.sum(dim=0), torch.full((5,), 6 / 5), rtol=1e-4, atol=1e-4)  # equal shares
    assert codes.argmax(dim=1).unique().numel() > scores.argmax(dim=1).unique().numel() - 1  # spread, not argmax


def test_sinkhorn_shared_columns_are_the_concatenated_batch() -> None:
    torch.manual_seed(1)
    batch, queued = torch.rand(4, 6) * 2 - 1, torch.rand(8, 6) * 2 - 1
    together = sinkhorn_knopp(torch.cat([queued, batch]), epsilon=0.05, iterations=3)
    torch.testing.assert_close(sinkhorn_knopp(batch, 0.05, 3, shared=queued), together[8:])


def test_swapped_prediction_loss_matches_a_loop_over_views() -> None:
    torch.manual_seed(2)
    scores = [torch.randn(3, 4) for _ in range(4)]  # views 0, 1 global, 2, 3 local
    codes = [torch.softmax(torch.randn(3, 4), dim=1) for _ in range(2)]
    total, pairs = 0.0, 0
    for i in range(2):
        for v in range(4):
            if v == i:
                continue
            pairs += 1
            for b in range(3):
                row = [x / 0.2 for x in scores[v][b].tolist()]
                log_z = math.log(sum(math.exp(x) for x in row))
                total -= sum(float(codes[i][b][k]) * (row[k] - log_z) for k in range(4)) / 3
    got = swapped_prediction_loss(scores, codes, temperature=0.2)
    assert math.isclose(float(got), total / pairs, rel_tol=1e-5)


def test_swav_step_multi_crop_queue_and_frozen_prototypes() -> None:
    torch.manual_seed(3)
    model = SwAV(_encoder(), 4, projection_dim=3, projection_hidden_dim=8, prototypes=5, queue_length=12,
                 queue_start_step=1, freeze_prototypes_steps=2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.0)
    start = model.prototypes.weight.detach().clone()
    torch.testing.assert_close(start.norm(dim=1), torch.ones(5))
    for step in range(4):
        views = [torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8), torch.randn(4, 1, 4, 4)]  # 2 global, 1 local
        out = model.training_step({"views": views, "global_views": 2})
        assert out.loss.dim() == 0 and not out.logs["loss"].requires_grad
        opt.zero_grad()
        out.loss.backward()
        assert model.prototypes.weight.grad is not None  # in the graph (DDP), but frozen at first
        opt.step()
        model.on_step_end(step, 10)
        frozen = torch.allclose(F.normalize(model.prototypes.weight.detach(), dim=1), start)
        assert frozen == (step < 2), step  # frozen for 2 steps
        # the queue fills from step 1 with both global views of the batch
        assert len(model.queue) == min(12, 8 * step)
    with torch.no_grad():  # the full queue joins the Sinkhorn batch: other codes, another loss
        with_queue = model.training_step({"views": views, "global_views": 2}).loss
        model.queue = None
        without = model.training_step({"views": views, "global_views": 2}).loss
    assert not torch.isclose(with_queue, without)
    with pytest.raises(UserError, match="at least 2 global views"):
        model.training_step({"views": views, "global_views": 1})
