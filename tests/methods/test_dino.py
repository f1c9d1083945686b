"""DINO: the loss over every (teacher global view, student view) pair but the same view against a
loop written here, the centre's EMA, the teacher temperature's warm-up (and that a resumed model
reads it back), the frozen last layer, and a multi-crop step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from contrastkit.methods import DINO
from contrastkit.methods.dino import dino_loss, teacher_temperature
from contrastkit.training.optim import parameter_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def _encoder() -> nn.Module:
    enc = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    enc.out_dim = 4  # type: ignore[assignment]
    return enc


def _model(**kw: object) -> DINO:
    return DINO(_encoder(), 4, projection_dim=3, projection_hidden_dim=8, out_dim=6, **kw)  # type: ignore[arg-type]


def _softmax(row: list[float]) -> list[float]:
    m = max(row)
    e = [math.exp(x - m) for x in row]
    return [x / sum(e) for x in e]


def test_dino_loss_over_all_pairs_but_the_same_view_matches_a_loop() -> None:
    torch.manual_seed(0)
    teacher = [torch.randn(3, 5) for _ in range(2)]  # global views 0 and 1
    student = [torch.randn(3, 5) for _ in range(5)]  # the same two, then three local views
    center = torch.randn(1, 5)
    total, pairs = 0.0, 0
    for i in range(2):
        for v in range(5):
            if v == i:
                continue
            pairs += 1
            for b in range(3):
                t = _softmax([(float(teacher[i][b, k]) - float(center[0, k])) / 0.04 for k in range(5)])
                s = _softmax([float(student[v][b, k]) / 0.1 for k in range(5)])
                total -= sum(t[k] * math.log(s[k]) for k in range(5)) / 3
    got = dino_loss(student, teacher, center, student_temp=0.1, teacher_temp=0.04)
    assert math.isclose(float(got), total / pairs, rel_tol=1e-5)


def test_center_follows_the_teacher_outputs_by_ema() -> None:
    torch.manual_seed(1)
    model = _model(center_momentum=0.8)
    model.center.normal_()
    before = model.center.clone()
    g1, g2, local = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8), torch.randn(4, 1, 4, 4)
    with torch.no_grad():
        teacher_out = model.teacher(torch.cat([g1, g2]))  # the teacher sees the global views only
    model.training_step({"views": [g1, g2, local], "global_views": 2})
    torch.testing.assert_close(model.center, 0.8 * before + 0.2 * teacher_out.mean(dim=0, keepdim=True))


def test_teacher_temperature_warms_up_linearly_and_survives_a_resume() -> None:
    values = [teacher_temperature(p, 0.04, 0.07, 0.3) for p in (0.0, 0.15, 0.3, 0.9)]
    assert values == pytest.approx([0.04, 0.055, 0.07, 0.07])
    assert teacher_temperature(0.0, 0.04, 0.07, 0.0) == 0.07  # no warm-up
    model = _model(warmup_teacher_temperature=0.02, teacher_temperature=0.06, warmup_teacher_temperature_fraction=0.5)
    views = {"views": [torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)]}
    seen = []
    for step in range(6):
        seen.append(model.training_step(views).logs["teacher_temperature"])
        model.on_step_end(step, 8)  # progress (step + 1) / 8
    assert seen == pytest.approx([0.02, 0.03, 0.04, 0.05, 0.06, 0.06])
    resumed = _model(warmup_teacher_temperature=0.02, teacher_temperature=0.06, warmup_teacher_temperature_fraction=0.5)
    resumed.load_state_dict(model.state_dict())
    assert resumed.teacher_temperature() == pytest.approx(0.06) and resumed.clock.steps == 6


def test_last_layer_frozen_for_the_first_steps_and_teacher_moves_by_ema() -> None:
    torch.manual_seed(2)
    model = _model(freeze_last_layer_steps=2, momentum=0.9, momentum_final=0.9, momentum_schedule="constant")
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.0)
    start = model.dino_head.last.detach().clone()
    for step in range(3):
        views = [torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8), torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)]
        out = model.training_step({"views": views, "global_views": 2})
        opt.zero_grad()
        out.loss.backward()
        assert all(p.grad is None for p in model.teacher.parameters())
        opt.step()
        before = [p.clone() for p in model.teacher.target.parameters()]
        model.on_step_end(step, 10)
        online = nn.Sequential(model.encoder, model.dino_head).parameters()
        for b, t, o in zip(before, model.teacher.target.parameters(), online, strict=True):
            torch.testing.assert_close(t, 0.9 * b + 0.1 * o.detach())
        assert torch.equal(model.dino_head.last, start) == (step < 2), step


def test_last_layer_with_trained_gains_when_not_normalised() -> None:
    """norm_last_layer=False: the last layer's rows are gain · v / |v| with a gain per row that
    starts at 1 (the same outputs as the normalised layer at first), gets gradients and moves
    (it is 1-D: no weight decay), and is frozen with the layer; the default has no gain."""
    assert _model().dino_head.gain is None
    torch.manual_seed(3)
    model = _model(norm_last_layer=False, freeze_last_layer_steps=1)
    head = model.dino_head
    assert head.gain is not None and torch.equal(head.gain, torch.ones(6))
    b = torch.nn.functional.normalize(torch.randn(5, 3), dim=1)
    rows = torch.nn.functional.normalize(head.last.detach(), dim=1)
    torch.testing.assert_close(head.logits(b), b @ rows.T)
    opt = torch.optim.AdamW(parameter_groups(model, weight_decay=0.1), lr=0.05)  # as contrastkit groups them
    for step in range(2):
        out = model.training_step({"views": [torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)]})
        opt.zero_grad()
        out.loss.backward()
        assert head.gain.grad is not None and bool((head.gain.grad != 0).any()) == (step >= 1), step
        opt.step()
        model.on_step_end(step, 10)
        assert torch.equal(head.gain, torch.ones(6)) == (step < 1), step  # frozen for the first step only
    rows = torch.nn.functional.normalize(head.last.detach(), dim=1)
    assert not torch.allclose(head.gain, torch.ones(6))
    torch.testing.assert_close(head.logits(b), (b @ rows.T) * head.gain.detach())  # output k scaled by gain k
