"""EMA momentum encoder with schedules, the MoCo key queue and split BatchNorm."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from contrastkit.errors import UserError
from contrastkit.negatives.queue import KeyQueue
from contrastkit.nn.batchnorm import SplitBatchNorm2d, convert_split_batchnorm
from contrastkit.nn.momentum import MomentumEncoder, ema_update, momentum_at


def test_momentum_schedule_endpoints_and_midpoint() -> None:
    assert momentum_at(0.0, 0.99, 1.0) == pytest.approx(0.99)
    assert momentum_at(1.0, 0.99, 1.0) == pytest.approx(1.0)
    assert momentum_at(0.5, 0.99, 1.0) == pytest.approx(0.995)
    assert momentum_at(0.3, 0.9, 1.0, "constant") == 0.9
    with pytest.raises(UserError, match="base <= final"):
        momentum_at(0.0, 0.999, 0.99)
    with pytest.raises(UserError, match="schedule"):
        momentum_at(0.0, 0.9, 1.0, "linear")


def test_ema_update_formula_and_buffers() -> None:
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target = MomentumEncoder(online, base=0.9, final=0.9, schedule="constant")
    assert all(not p.requires_grad for p in target.parameters())
    before = [p.clone() for p in target.target.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    online(torch.randn(8, 3))  # changes the BatchNorm running statistics
    m = target.update(online, progress=0.5)
    assert m == 0.9
    for b, t, o in zip(before, target.target.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    torch.testing.assert_close(target.target[1].running_mean, online[1].running_mean)
    assert float(target.current) == pytest.approx(0.9)


def test_ema_update_with_momentum_one_keeps_the_target() -> None:
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    keep = [p.clone() for p in a.parameters()]
    ema_update(a, b, 1.0)
    for k, p in zip(keep, a.parameters(), strict=True):
        torch.testing.assert_close(k, p)


def test_queue_is_a_fifo_ring_and_survives_state_dict() -> None:
    q = KeyQueue(5, 2)
    assert len(q) == 0 and q.keys().shape == (0, 2)
    reference: list[list[float]] = []
    for step in range(4):
        keys = torch.arange(6, dtype=torch.float32).view(3, 2) + 10 * step
        q.enqueue(keys)
        reference = (reference + keys.tolist())[-5:]
        assert len(q) == min(5, 3 * (step + 1))
        assert sorted(map(tuple, q.keys().tolist())) == sorted(map(tuple, reference))
    copy = KeyQueue(5, 2)
    copy.load_state_dict(q.state_dict())
    torch.testing.assert_close(copy.keys(), q.keys())
    assert int(copy.ptr) == int(q.ptr)
    big = torch.arange(14, dtype=torch.float32).view(7, 2)
    q.enqueue(big)  # more than the queue holds: the newest 5 stay
    assert sorted(map(tuple, q.keys().tolist())) == sorted(map(tuple, big[-5:].tolist()))


def test_split_batchnorm_equals_batchnorm_per_group() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4)
    split = SplitBatchNorm2d(3, num_splits=2)
    with torch.no_grad():
        split.weight.uniform_()
        split.bias.uniform_()
    plain = [nn.BatchNorm2d(3) for _ in range(2)]
    for bn in plain:
        bn.load_state_dict(split.state_dict())
    out = split(x)
    ref = torch.cat([plain[0](x[:4]), plain[1](x[4:])])
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(split.running_mean, (plain[0].running_mean + plain[1].running_mean) / 2)
    split.eval()
    plain[0].eval()
    plain[0].running_mean.copy_(split.running_mean)
    plain[0].running_var.copy_(split.running_var)
    torch.testing.assert_close(split(x), plain[0](x))


def test_convert_split_batchnorm_keeps_state() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
    net[1].running_mean.fill_(0.5)
    out = convert_split_batchnorm(net, 4)
    assert isinstance(out[1], SplitBatchNorm2d) and out[1].num_splits == 4
    assert math.isclose(float(out[1].running_mean[0]), 0.5)
    assert set(out.state_dict()) == set(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()).state_dict())
