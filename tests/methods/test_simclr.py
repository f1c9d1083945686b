"""SimCLR on a tiny real problem: the loss falls, the embeddings do not collapse, and the
learned features beat the same network at random initialisation."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from contrastkit.losses import info_nce
from contrastkit.methods import SimCLR
from contrastkit.recipes import load_config
from contrastkit.runner import load_run, train_run
from contrastkit.runs import new_run_dir

from ..conftest import tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only spins


def test_training_step_equals_nt_xent_on_the_projections() -> None:
    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8))
    model = SimCLR(enc, 8, projection_dim=4, projection_hidden_dim=8, temperature=0.3)
    model.eval()
    x1, x2 = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4)
    out = model.training_step({"views": [x1, x2]})
    z = model.projector(enc(torch.cat([x1, x2])))
    labels = torch.arange(5).repeat(2)
    torch.testing.assert_close(out.loss, info_nce(z, labels=labels, temperature=0.3))
    # three views: every other view of the same image is a positive
    out3 = model.training_step({"views": [x1, x2, x1.flip(-1)]})
    z3 = model.projector(enc(torch.cat([x1, x2, x1.flip(-1)])))
    torch.testing.assert_close(out3.loss, info_nce(z3, labels=torch.arange(5).repeat(3), temperature=0.3))


def test_simclr_learns_on_digits(tmp_path: Path) -> None:
    cfg = load_config(
        "digits-simclr",
        tiny_overrides(**{
            "model.width": 16,
            "model.projection_hidden_dim": 64,
            "model.projection_dim": 32,
            "optim.lr": 0.004,
            "train.max_steps": 40,
            "train.checkpoint_every": 1000,
            "train.num_threads": 1,
            "eval.baselines": True,
            "eval.plots": False,
            "eval.few_label_shots": "[]",  # kNN and the linear probe say enough
            "eval.max_train_samples": 700,
        }),
    )
    run = new_run_dir(cfg, str(tmp_path / "run"), resume=False)
    train_run(cfg, run, progress=False, verbose=False)
    rows = list(csv.DictReader((run / "train_log.csv").open()))
    losses = [float(r["loss"]) for r in rows]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.3, (first, last)
    # no collapse: normalised embeddings keep spread across dimensions
    assert float(rows[-1]["emb_std"]) > 0.3
    res = load_run(run).evaluate(verbose=False)
    ssl = res["encoders"]["ssl"]
    rnd = res["encoders"]["random_init"]
    assert ssl["knn"]["accuracy"] > 0.8
    assert ssl["knn"]["accuracy"] > rnd["knn"]["accuracy"] + 0.05
    assert ssl["linear_probe"]["accuracy"] > 0.85
