"""The image_text task's validation: a seeded slice of the training pairs held out of training,
on which image↔text hit@1 is measured by the one Validation callback (results.json's
``validation``), and what ``ImageTextTask.validation`` tells a sweep."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from contrastkit.cli import main
from contrastkit.errors import UserError
from contrastkit.recipes import load_config
from contrastkit.runner import load_run, train_run
from contrastkit.runs import checkpoint_part, load_run_checkpoint, new_run_dir
from contrastkit.tasks import ValidationSpec, get_task
from contrastkit.tasks.image_text import hold_out_pairs, image_text_data
from contrastkit.training import load_checkpoint

from ..conftest import InterruptAt, Interrupted
from ..text_helpers import quick_runs, tiny_clip_sets


@pytest.fixture(scope="module", autouse=True)
def _quick() -> object:
    with quick_runs():
        yield


def test_held_out_pairs_are_disjoint_from_training_and_seeded() -> None:
    n = 50
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).clone()
    data = {"images": images, "labels": None, "captions": [f"caption {i}" for i in range(n)], "classes": []}
    train, val = hold_out_pairs(data, 10, seed=3)
    held = [int(x) for x in val["images"][:, 0, 0, 0]]
    kept = [int(x) for x in train["images"][:, 0, 0, 0]]
    assert len(held) == 10 and sorted(held + kept) == list(range(n)) and not set(held) & set(kept)
    assert val["captions"] == [f"caption {i}" for i in held] and train["captions"] == [f"caption {i}" for i in kept]
    assert held == val["rows"].tolist() and val["record"]["size"] == 10 and val["record"]["of"] == n
    again, other = hold_out_pairs(data, 10, seed=3)[1], hold_out_pairs(data, 10, seed=4)[1]
    assert torch.equal(again["rows"], val["rows"]) and again["record"] == val["record"]
    assert not torch.equal(other["rows"], val["rows"])
    labelled = {**data, "captions": None, "labels": torch.arange(n)}  # a labelled data set: labels follow the images
    tr, va = hold_out_pairs(labelled, 10, seed=3)
    assert va["labels"].tolist() == held and tr["labels"].tolist() == kept
    with pytest.raises(UserError, match=r"^eval.val_size 50 leaves no training pair: there are 50; use at most 49$"):
        hold_out_pairs(data, 50, seed=0)
    with pytest.raises(UserError, match=r"eval.val_size must be >= 0, got -1"):
        load_config("fashion-mnist-clip", ["data.name=digits", "eval.val_size=-1"])


def _log(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "train_log.csv").open()))


def test_validation_curve_is_image_text_hit_at_1_on_the_held_out_pairs_and_resumes_exactly(tmp_path: Path) -> None:
    """200 of digits' 1437 training images are held out; hit@1 both ways on them with captions
    made as the test retrieval makes them, every 2 steps and after the last; the figure equals a
    naive recomputation from the saved run, and a run killed at step 3 (its checkpoint: step 2's,
    after its validation) and resumed has the same curve and weights."""
    from contrastkit.data.text.captions import CaptionMaker

    sets = tiny_clip_sets(**{"eval.val_size": 200, "eval.val_every": 2, "train.checkpoint_every": 2})
    run = tmp_path / "run"
    assert main(["train", *sets, "--out", str(run), "--no-eval", "--quiet"]) == 0
    cfg = load_config(None, sets[1::2])
    cut = new_run_dir(cfg, str(tmp_path / "cut"), resume=False)
    with pytest.raises(Interrupted):
        train_run(cfg, cut, progress=False, verbose=False, callbacks=[InterruptAt(3)])
    assert load_checkpoint(cut / "checkpoints" / "last.pt")["step"] == 2
    _, resumed = train_run(cfg, cut, resume=True, progress=False, verbose=False)
    res = json.loads((run / "results.json").read_text())
    assert res["train"]["epochs_done"] == pytest.approx(4 / ((1437 - 200) // 64))  # trained on the rest only
    val = res["validation"]
    assert (val["metric"], val["direction"], val["pairs"], val["split"]["size"], val["split"]["of"]) == (
        "val_hit@1", "max", 200, 200, 1437)
    assert [p["step"] for p in val["curve"]] == [2, 4] and not val["stopped_early"]
    assert all(0 <= p["value"] <= 1 for p in val["curve"]) and val["value"] == val["curve"][-1]["value"]
    logged = {int(r["step"]): float(r["val_hit@1"]) for r in _log(run) if r.get("val_hit@1")}
    assert logged == pytest.approx({p["step"]: p["value"] for p in val["curve"]})
    # the figure, recomputed naively from the saved towers on the held-out images
    trained: object = load_run(run)
    data = image_text_data(cfg, "train")
    _, held = hold_out_pairs(data, 200, 0)
    maker = CaptionMaker.for_images(held["images"], held["labels"], data["classes"], cfg.text.caption_templates,
                                    trained.meta()["thresholds"])  # type: ignore[attr-defined]
    captions = maker.fixed(range(200), cfg.text.caption_templates[-1])
    unique = list(dict.fromkeys(captions))
    zi = F.normalize(trained.encode_images(held["images"], batch_size=256), dim=1)  # type: ignore[attr-defined]
    zt = F.normalize(trained.encode_texts(unique, batch_size=256), dim=1)  # type: ignore[attr-defined]
    sims = zi @ zt.T
    i2t = sum(unique[int(sims[i].argmax())] == captions[i] for i in range(200)) / 200
    t2i = sum(captions[int(sims[:, j].argmax())] == c for j, c in enumerate(unique)) / len(unique)
    assert val["value"] == pytest.approx((i2t + t2i) / 2, abs=1e-9)
    assert val["final"]["image_to_text_hit@1"] == pytest.approx(i2t) and val["captions"] == len(unique)
    assert [(p["step"], p["value"]) for p in resumed["validation"]["curve"]] == [(p["step"], p["value"]) for p in val["curve"]]
    for key, value in checkpoint_part(load_run_checkpoint(run), "model").items():
        assert torch.equal(value, checkpoint_part(load_run_checkpoint(cut), "model")[key]), key


def test_keep_best_makes_the_best_steps_towers_the_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """eval.keep_best: the towers of the best val_hit@1 step (step 2 of 4: the figure is made to
    fall) are kept in checkpoints/best.pt and become the run's (encoder.safetensors, the model
    that is tested), not the last step's."""
    from safetensors.torch import load_file

    falling = iter([0.9, 0.5])

    def retrieval(*args: object, **kwargs: object) -> dict[str, dict[str, float]]:
        value = next(falling)
        return {"image_to_text": {"hit@1": value}, "text_to_image": {"hit@1": value}}

    monkeypatch.setattr("contrastkit.tasks.image_text.caption_retrieval", retrieval)
    sets = tiny_clip_sets(**{"eval.val_size": 200, "eval.val_every": 2, "eval.keep_best": True, "eval.enabled": False})
    cfg = load_config(None, sets[1::2])
    run = new_run_dir(cfg, str(tmp_path / "run"), resume=False)
    _, extra = train_run(cfg, run, progress=False, verbose=False)
    val = extra["validation"]
    assert [(p["step"], p["value"]) for p in val["curve"]] == [(2, 0.9), (4, 0.5)]
    assert val["kept_best"] and val["best_step"] == 2 and val["value"] == 0.9
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["step"] == 2 and best["metric"] == "val_hit@1"
    image_tower = {k.removeprefix("encoder."): v for k, v in best["model"].items() if k.startswith("encoder.")}
    exported = load_file(run / "encoder.safetensors")
    assert exported.keys() == image_tower.keys() and all(torch.equal(exported[k], v) for k, v in image_tower.items())
    trained = load_run(run).model().state_dict()
    assert all(torch.equal(trained[k], v) for k, v in best["model"].items())
    last = checkpoint_part(load_run_checkpoint(run), "model")
    assert not all(torch.equal(v, best["model"][k]) for k, v in last.items())


def test_image_text_validation_spec_switches_the_slice_on_for_a_sweep() -> None:
    from contrastkit.sweep.plan import make_plan

    task = get_task("image_text")
    cfg = load_config("fashion-mnist-clip", ["data.name=digits", "eval.val_size=100"])
    assert task.validation(cfg) == ValidationSpec("val_hit@1", "max", (), "eval.val_every")
    cfg = load_config("fashion-mnist-clip", ["data.name=digits"])
    assert task.validation(cfg) == ValidationSpec("val_hit@1", "max", ("eval.val_size=143",), "eval.val_every")
    plan = make_plan("fashion-mnist-clip", ["method.temperature=0.05:0.2"], trials=2, sets=["data.name=digits"],
                     validate_every=10)
    assert (plan.metric, plan.direction, plan.task) == ("val_hit@1", "max", "image_text")
    assert plan.validation_sets == ["eval.val_size=143", "eval.val_every=10"]
    assert plan.trial_config({"method.temperature": 0.1}).eval.val_size == 143
    with pytest.raises(UserError, match=r"^eval.val_every measures on the validation split: set eval.val_size too"):
        load_config("fashion-mnist-clip", ["data.name=digits", "eval.val_every=10"])
    with pytest.raises(UserError, match=r"^eval.keep_best chooses on the validation split: set eval.val_size too"):
        load_config("fashion-mnist-clip", ["data.name=digits", "eval.keep_best=true"])
