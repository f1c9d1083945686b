"""The method family (MoCo v2/v3, BYOL, SimSiam, Barlow Twins, VICReg, SupCon, SwAV, DINO,
NNCLR): each learns on digits without collapsing; MoCo's contrast and queue, EMA targets,
semi-supervised labels."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastkit.data.image.spec import visible_labels
from contrastkit.errors import UserError
from contrastkit.methods import MoCoV2, SimCLR, SupCon, semi_supervised_labels
from contrastkit.methods.base import build_image_method
from contrastkit.recipes import load_config, recipe_names
from contrastkit.runner import train_run
from contrastkit.runs import new_run_dir

from ..conftest import tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only spins

# 20 steps at optim.lr 0.006: every loss has clearly fallen (by 5 % or more), none collapsed;
# MoCo v2's loss first rises while its queue fills with negatives: it gets 30 steps
METHOD_OVERRIDES: dict[str, dict[str, object]] = {
    "moco_v2": {"method.queue_size": 256, "method.bn_splits": 4, "train.max_steps": 30},
    "moco_v3": {"model.projection_layers": 3},
    "byol": {},
    "simsiam": {"model.projection_layers": 3, "method.predictor_hidden_dim": 8},
    "barlow_twins": {"model.projection_layers": 3},
    "vicreg": {"model.projection_layers": 3},
    "supcon": {"data.label_fraction": 0.2},
    "swav": {"method.prototypes": 30},
    "dino": {"model.projection_layers": 3, "method.out_dim": 256, "optim.lr": 0.002},
    "nnclr": {"model.projection_layers": 3, "method.support_set_size": 512},
}


def _tiny_encoder() -> nn.Module:
    enc = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    enc.out_dim = 4  # type: ignore[assignment]
    return enc


@pytest.mark.filterwarnings("ignore:the overrides change the task or method")  # simclr's temperature
@pytest.mark.parametrize("method", sorted(METHOD_OVERRIDES))
def test_method_loss_falls_without_collapse_on_digits(method: str, tmp_path: Path) -> None:
    extra = {"method.name": method, "train.max_steps": 20, "optim.lr": 0.006, "train.log_every": 1,
             "train.checkpoint_every": 1000, "train.num_threads": 1}  # one checkpoint: the last
    extra.update(METHOD_OVERRIDES[method])
    cfg = load_config("digits-simclr", tiny_overrides(**extra))
    run = new_run_dir(cfg, str(tmp_path / method), resume=False)
    summary, _ = train_run(cfg, run, progress=False, verbose=False)
    assert summary.steps == extra["train.max_steps"] and summary.peak_memory_mb > 0
    rows = list(csv.DictReader((run / "train_log.csv").open()))
    assert len(rows) == summary.steps
    loss = [float(r["loss"]) for r in rows]
    start = 8 if method == "moco_v2" else 0  # after MoCo v2's queue filled
    first, last = sum(loss[start : start + 6]) / 6, sum(loss[-6:]) / 6
    assert last < first, f"{method}: loss {first:.4f} -> {last:.4f}"
    assert float(rows[-1]["emb_std"]) > 0.2, f"{method} collapsed: {rows[-1]}"
    assert float(rows[-1]["eff_rank"]) > 2.0, f"{method} collapsed: {rows[-1]}"
    assert summary.collapsed_at_step is None


def test_moco_contrast_without_in_batch_negatives_matches_naive_formula() -> None:
    torch.manual_seed(0)
    model = MoCoV2(_tiny_encoder(), 4, projection_dim=3, projection_hidden_dim=5, queue_size=8, temperature=0.3)
    q, k, queue = torch.randn(5, 3), torch.randn(5, 3), F.normalize(torch.randn(8, 3), dim=1)
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    ref = 0.0
    for i in range(5):
        pos = math.exp(float(qn[i] @ kn[i]) / 0.3)
        neg = sum(math.exp(float(qn[i] @ queue[j]) / 0.3) for j in range(8))
        ref -= math.log(pos / (pos + neg))
    got = model.contrast(q, k, queue, in_batch=False)
    assert math.isclose(float(got), ref / 5, rel_tol=1e-5)
    with_batch = model.contrast(q, k, queue, in_batch=True)
    assert float(with_batch) > float(got)  # more negatives in the denominator


def test_moco_v2_step_fills_queue_and_moves_key_encoder_by_ema() -> None:
    torch.manual_seed(0)
    model = MoCoV2(_tiny_encoder(), 4, projection_dim=3, projection_hidden_dim=5, queue_size=10, momentum=0.9,
                   momentum_final=0.9, momentum_schedule="constant", bn_splits=2)
    x1, x2 = torch.randn(4, 1, 6, 6), torch.randn(4, 1, 6, 6)
    out = model.training_step({"views": [x1, x2]})
    out.loss.backward()
    assert len(model.queue) == 8  # symmetric: both key sets enqueued
    # logs are detached tensors, made numbers by the loop on logged steps only; so are the
    # collapse statistics, computed only when asked for
    assert isinstance(out.logs["loss"], torch.Tensor) and not out.logs["loss"].requires_grad
    assert float(out.logs["loss"]) == float(out.loss.detach()) and float(out.logs["momentum"]) == pytest.approx(0.9)
    assert out.diagnostics is not None
    assert set(out.diagnostics()) == {"emb_std", "eff_rank", "uniformity", "alignment"}
    assert all(p.grad is None for p in model.key_encoder.parameters())
    online = [p.detach().clone() for p in nn.Sequential(model.encoder, model.projector).parameters()]
    before = [p.clone() for p in model.key_encoder.target.parameters()]
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.5)
    model.on_step_end(0, 10)
    online = [p.detach() for p in nn.Sequential(model.encoder, model.projector).parameters()]
    for b, t, o in zip(before, model.key_encoder.target.parameters(), online, strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    assert {"queue.queue", "queue.ptr", "key_encoder.current"} <= set(model.state_dict())


def test_semi_supervised_labels() -> None:
    labels = torch.tensor([3, -1, 3, -1, 0])
    out = semi_supervised_labels(labels, 5, torch.device("cpu"))
    assert out[0] == out[2] == 3 and out[4] == 0
    assert out[1] != out[3] and min(int(out[1]), int(out[3])) > 3
    torch.testing.assert_close(semi_supervised_labels(None, 4, torch.device("cpu")), torch.arange(4))


def test_supcon_without_labels_is_simclr_and_labels_add_positives() -> None:
    torch.manual_seed(0)
    sup = SupCon(_tiny_encoder(), 4, projection_dim=3, projection_hidden_dim=5, temperature=0.2)
    simclr = SimCLR(_tiny_encoder(), 4, projection_dim=3, projection_hidden_dim=5, temperature=0.2)
    simclr.load_state_dict(sup.state_dict())
    views = [torch.randn(6, 1, 6, 6), torch.randn(6, 1, 6, 6)]
    unlabeled = sup.training_step({"views": views, "labels": torch.full((6,), -1)}).loss
    torch.testing.assert_close(unlabeled, simclr.training_step({"views": views}).loss)
    labelled = sup.training_step({"views": views, "labels": torch.tensor([0, 0, 0, 1, 1, 1])}).loss
    assert not torch.isclose(labelled, unlabeled)


def test_visible_labels_keeps_a_seeded_fraction_per_class() -> None:
    labels = torch.arange(10).repeat_interleave(50)
    vis = visible_labels(labels, 0.1, seed=3)
    for c in range(10):
        kept = vis[labels == c]
        assert int((kept == c).sum()) == 5 and int((kept == -1).sum()) == 45
    torch.testing.assert_close(vis, visible_labels(labels, 0.1, seed=3))
    assert not torch.equal(vis, visible_labels(labels, 0.1, seed=4))
    assert int((visible_labels(labels, 0.001, seed=0) >= 0).sum()) == 10  # at least one per class


def test_every_method_builds_from_its_recipe() -> None:
    names = [r for r in recipe_names() if r.startswith("digits-") and load_config(r).task == "image"]
    assert len(names) >= 8
    for r in names:
        cfg = load_config(r)
        model = build_image_method(cfg.method, cfg.model, 1, 8).eval()
        assert model(torch.randn(2, 1, 8, 8)).shape[0] == 2


def test_bad_method_settings_are_one_line_errors() -> None:
    with pytest.raises(UserError, match=r"method\.name 'mocov2'.*moco_v2"):
        load_config("digits-simclr", ["method.name=mocov2"])
    with pytest.raises(UserError, match=r"divisible by method\.bn_splits"):
        load_config("digits-moco-v2", ["method.bn_splits=3"])
    with pytest.raises(UserError, match=r"^method.momentum 0.999 and method.momentum_final 0.99 must satisfy"):
        load_config("digits-byol", ["method.momentum=0.999", "method.momentum_final=0.99"])
    with pytest.raises(UserError, match="label_fraction"):
        load_config("digits-simclr", ["data.label_fraction=0"])


def test_simclr_queue_adds_past_projections_as_negatives() -> None:
    from contrastkit.losses import info_nce

    torch.manual_seed(0)
    model = SimCLR(_tiny_encoder(), 4, projection_dim=3, projection_hidden_dim=5, temperature=0.3, queue_size=16)
    views = [torch.randn(5, 1, 6, 6), torch.randn(5, 1, 6, 6)]
    model.training_step({"views": views})
    assert len(model.queue) == 10
    bank = model.queue.keys().clone()
    loss = model.training_step({"views": views}).loss
    z = model.projector(model.encoder(torch.cat(views)))
    idx = torch.arange(10)
    expected = info_nce(z, positive_index=(idx + 5) % 10, negative_keys=bank, temperature=0.3)
    torch.testing.assert_close(loss, expected)
    assert len(model.queue) == 16  # full: the oldest keys were overwritten
