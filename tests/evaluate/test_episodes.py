"""N-way K-shot episodes: the confidence interval formula, the prototype classifier against a
loop, class restrictions, and the novel-class protocol (no novel class in pre-training)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from contrastkit.data.image.spec import load_split
from contrastkit.errors import UserError
from contrastkit.evaluate.episodes import (
    confidence_interval,
    episode_accuracy,
    prototype_predictions,
)
from contrastkit.recipes import load_config
from contrastkit.runner import load_run, train_run
from contrastkit.runs import new_run_dir

from ..conftest import tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only spins


def test_confidence_interval_is_196_standard_errors() -> None:
    acc = torch.tensor([0.2, 0.4, 0.6, 0.8, 1.0], dtype=torch.float64)
    mean = sum(acc.tolist()) / 5
    s = math.sqrt(sum((a - mean) ** 2 for a in acc.tolist()) / 4)
    assert confidence_interval(acc) == pytest.approx(1.96 * s / math.sqrt(5))
    assert math.isnan(confidence_interval(torch.tensor([0.5])))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_prototypes_match_a_loop(metric: str) -> None:
    torch.manual_seed(0)
    support, labels = torch.randn(12, 4), torch.arange(3).repeat(4)
    queries = torch.randn(9, 4)
    got = prototype_predictions(support, labels, queries, 3, metric)
    for q in range(9):
        best, best_class = None, -1
        for c in range(3):
            proto = support[labels == c].mean(0)
            if metric == "cosine":
                score = float(torch.dot(queries[q], proto) / (queries[q].norm() * proto.norm()))
            else:
                score = -float((queries[q] - proto).norm())
            if best is None or score > best:
                best, best_class = score, c
        assert int(got[q]) == best_class


def test_episodes_separate_easy_classes_and_respect_the_class_pool() -> None:
    torch.manual_seed(1)
    labels = torch.arange(10).repeat_interleave(40)
    centres = torch.randn(10, 16) * 10
    features = centres[labels] + torch.randn(400, 16) * 0.1
    features[labels >= 5] = torch.randn(int((labels >= 5).sum()), 16)  # classes 5-9: pure noise
    easy = episode_accuracy(features, labels, ways=5, shots=1, episodes=100, classes=[0, 1, 2, 3, 4])
    hard = episode_accuracy(features, labels, ways=5, shots=5, episodes=300, classes=[5, 6, 7, 8, 9])
    assert easy["mean"] == 1.0 and easy["classes"] == [0, 1, 2, 3, 4]
    assert abs(hard["mean"] - 0.2) < 3 * hard["ci95"] + 0.02  # chance, within the interval
    assert hard["ci95"] == pytest.approx(1.96 * hard["std"] / math.sqrt(300))
    with pytest.raises(UserError, match="5 classes of >= 16 examples; 3 of the 3 classes"):
        episode_accuracy(features, labels, ways=5, classes=[0, 1, 2])


def test_novel_class_protocol_keeps_novel_classes_out_of_pre_training(tmp_path: Path) -> None:
    sets = tiny_overrides(**{
        "data.train_classes": "[0, 1, 2, 3, 4]", "eval.episodes": 30, "eval.episode_classes": "novel",
        "eval.episode_shots": "[1, 5]", "train.max_steps": 2, "train.checkpoint_every": 2, "train.num_threads": 1,
        "eval.plots": False, "eval.knn": False, "eval.linear_probe": False, "eval.few_label_shots": "[]",
    })
    cfg = load_config("digits-simclr", sets)
    data = load_split(cfg.data, "train")  # what training reads
    assert data.labels is not None and set(data.labels.unique().tolist()) == {0, 1, 2, 3, 4}
    full = load_split(cfg.data, "train", all_classes=True)  # the probes' labelled bank
    assert full.labels is not None
    assert data.images.shape[0] == int((full.labels < 5).sum()) < full.images.shape[0]  # all of 0-4, nothing else
    run = new_run_dir(cfg, str(tmp_path / "run"), False)
    assert train_run(cfg, run, progress=False, verbose=False)[0].steps == 2
    encoders = load_run(run).evaluate(verbose=False)["encoders"]
    assert set(encoders) == {"ssl", "random_init", "raw_pixels"}
    for res in encoders.values():
        one, five = res["episodes"]["5way1shot"], res["episodes"]["5way5shot"]
        assert one["classes"] == five["classes"] == [5, 6, 7, 8, 9] and one["episodes"] == 30
        assert 0.2 < one["mean"] <= 1 and five["mean"] >= one["mean"] - 0.1
    with pytest.raises(UserError, match=r"episode_classes=novel needs data\.train_classes"):
        load_config("digits-simclr", ["eval.episode_classes=novel"])
    with pytest.raises(UserError, match=r"data.train_classes \[12\] are not classes of data set 'digits' \(0\.\.9\)"):
        load_split(load_config("digits-simclr", ["data.train_classes=[1, 12]"]).data, "train")
