"""The image task's validation split (held out of pre-training and of the probes' bank) and the
monitor on it (eval.monitor_every): its curve in TensorBoard, train_log.csv, results.json and the
report; training runs exactly as without it, and a resumed run continues its curve."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch

from contrastkit.cli import main
from contrastkit.data.image.spec import DataConfig, load_split
from contrastkit.data.image.validation import pretraining_data, validation_split
from contrastkit.recipes import load_config
from contrastkit.runner import train_run
from contrastkit.runs import checkpoint_part, new_run_dir
from contrastkit.training import load_checkpoint

from ..conftest import InterruptAt, Interrupted, tiny_overrides

VAL = {"eval.val_size": 300, "eval.monitor_every": 2, "train.log_every": 1, "train.max_steps": 5}


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "train_log.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_validation_rows_are_held_out_of_pretraining_and_the_bank() -> None:
    d = DataConfig(name="digits", train_classes=[0, 1, 2, 3, 4])
    split = validation_split(d, 300, seed=3)
    assert split is not None and split.rows.numel() == 300 and split.record()["of"] == 1437
    full = load_split(d, "train", all_classes=True)
    held = torch.zeros(len(full), dtype=torch.bool)
    held[split.rows] = True
    assert torch.equal(split.validation().images, full.images[held])
    assert torch.equal(split.rest().images, full.images[~held])  # the probes' bank: every class, no held row
    assert full.labels is not None
    in_classes = torch.isin(full.labels, torch.tensor([0, 1, 2, 3, 4]))
    pre = pretraining_data(d, split)
    assert torch.equal(pre.images, full.images[in_classes & ~held])  # type: ignore[union-attr]
    again = validation_split(DataConfig(name="digits"), 300, seed=3)
    assert again is not None and torch.equal(again.rows, split.rows)  # the seed alone fixes the draw
    other = validation_split(DataConfig(name="digits"), 300, seed=4)
    assert other is not None and not torch.equal(other.rows, split.rows)


def test_monitor_curve_reaches_tensorboard_csv_results_and_report(tmp_path: Path, one_thread: None) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    sets = tiny_overrides(**{**VAL, "eval.baselines": False, "eval.plots": False, "eval.few_label_shots": "[]",
                             "eval.monitor_bank": 5000, "eval.monitor_val": 5000, "eval.linear_protocol": "both",
                             "eval.linear_epochs": 2})
    assert main(["train", "--out", str(run), *[x for s in sets for x in ("--set", s)]]) == 0
    results = json.loads((run / "results.json").read_text())
    monitor = results["validation"]
    steps = [p["step"] for p in monitor["curve"]]
    assert steps == [2, 4, 5] and monitor["final"]["step"] == 5  # every 2 steps and at the last one
    assert monitor["metric"] == "val_knn_acc" and monitor["direction"] == "max" and monitor["every"] == 2
    assert monitor["bank"] == 1437 - 300 and monitor["val"] == 300
    accuracy = [p["value"] for p in monitor["curve"]]
    assert monitor["best"] == max(accuracy) and monitor["best_step"] == steps[accuracy.index(max(accuracy))]
    assert all(0.2 < a <= 1.0 for a in accuracy)  # 10 classes: chance is 0.1
    assert monitor["split"]["size"] == 300 and monitor["split"]["from"] == "train"
    assert monitor["value"] == accuracy[-1] and not monitor["kept_best"]  # the run's figure: its last point
    # with the whole bank and slice, the last point is the evaluation's kNN on the validation split
    assert results["eval"]["validation"]["knn"]["accuracy"] == pytest.approx(accuracy[-1], abs=1e-9)
    rows = _rows(run)
    assert {int(r["step"]): float(r["val_knn_acc"]) for r in rows if r["val_knn_acc"]} == pytest.approx(
        dict(zip(steps, accuracy, strict=True)))
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [(e.step, round(e.value, 5)) for e in events.Scalars("train/val_knn_acc")] == [
        (s, round(a, 5)) for s, a in zip(steps, accuracy, strict=True)]
    ssl = results["eval"]["encoders"]["ssl"]
    assert ssl["linear_probe"]["accuracy"] > 0.2 and ssl["linear_sgd"]["protocol"] == "sgd"
    page = (run / "report.html").read_text()
    assert re.search(r'<img src="data:image/png;base64,[^"]{2000,}" alt="validation accuracy while training">', page)
    assert "linear SGD 2 ep." in page  # the results table labels each protocol


def test_monitor_leaves_training_unchanged_and_resumes_its_curve(tmp_path: Path, one_thread: None) -> None:
    """The same losses with and without the monitor; killed after step 3 and resumed, the same curve."""
    base = {**VAL, "train.checkpoint_every": 2, "eval.enabled": False}
    with_monitor = load_config("digits-simclr", tiny_overrides(**base))
    without = load_config("digits-simclr", tiny_overrides(**{**base, "eval.monitor_every": 0}))
    runs = {name: new_run_dir(cfg, str(tmp_path / name), resume=False)
            for name, cfg in (("full", with_monitor), ("plain", without), ("cut", with_monitor))}
    _, full = train_run(with_monitor, runs["full"], progress=False, verbose=False)
    train_run(without, runs["plain"], progress=False, verbose=False)
    losses = [r["loss"] for r in _rows(runs["full"]) if r["loss"]]  # the monitor's values are rows of their own
    assert len(losses) == 5 and losses == [r["loss"] for r in _rows(runs["plain"]) if r["loss"]]
    assert [r["step"] for r in _rows(runs["plain"]) if r["val_knn_acc"]] == ["5"]  # monitor_every 0: the last step only
    with pytest.raises(Interrupted):
        train_run(with_monitor, runs["cut"], progress=False, verbose=False, callbacks=[InterruptAt(3)])
    assert [p["step"] for p in load_checkpoint(runs["cut"] / "checkpoints" / "last.pt")["callbacks"][1]["curve"]] == [2]
    _, cut = train_run(with_monitor, runs["cut"], resume=True, progress=False, verbose=False)
    strip = [{k: v for k, v in p.items() if k != "seconds"} for p in full["validation"]["curve"]]
    assert [{k: v for k, v in p.items() if k != "seconds"} for p in cut["validation"]["curve"]] == strip


def test_keep_best_makes_the_best_validation_steps_weights_the_runs_encoder(
    tmp_path: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """eval.keep_best: the weights of the best val_knn_acc step (here the first of three: the
    accuracy is made to fall) go to checkpoints/best.pt and become the run's encoder — the
    encoder.safetensors it exports and the model that `evaluate` tests — not the last step's."""
    from safetensors.torch import load_file

    from contrastkit.evaluate.monitor import KnnAccuracy
    from contrastkit.runner import load_run

    falling = iter([0.9, 0.8, 0.7])
    monkeypatch.setattr(KnnAccuracy, "__call__", lambda self: next(falling))
    cfg = load_config("digits-simclr", tiny_overrides(**{**VAL, "eval.keep_best": True, "eval.enabled": False}))
    run = new_run_dir(cfg, str(tmp_path / "run"), resume=False)
    _, extra = train_run(cfg, run, progress=False, verbose=False)
    val = extra["validation"]
    assert [p["value"] for p in val["curve"]] == [0.9, 0.8, 0.7] and val["kept_best"]
    assert val["best_step"] == 2 and val["value"] == val["best"] == 0.9  # the run's figure: the kept step's
    best, last = (load_checkpoint(run / "checkpoints" / n) for n in ("best.pt", "last.pt"))
    assert best["step"] == 2 and best["metric"] == "val_knn_acc" and best["value"] == 0.9 and last["step"] == 5
    kept = {k.removeprefix("encoder."): v for k, v in best["model"].items() if k.startswith("encoder.")}
    exported = load_file(run / "encoder.safetensors")
    assert exported.keys() == kept.keys() and all(torch.equal(exported[k], kept[k]) for k in kept)
    trained = load_run(run).model().state_dict()
    assert all(torch.equal(trained[k], v) for k, v in best["model"].items())
    assert not all(torch.equal(v, best["model"][k]) for k, v in checkpoint_part(last).items())  # not the last step's


@pytest.mark.parametrize(("sets", "message"), [
    (["eval.monitor_every=5"], "eval.monitor_every measures on the validation split: set eval.val_size"),
    (["eval.keep_best=true"], "eval.keep_best chooses on the validation split: set eval.val_size"),
    (["eval.val_size=1437"], "eval.val_size 1437 leaves no training image"),
])
def test_bad_validation_settings_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], sets: list[str],
                                              message: str) -> None:
    assert main(["train", "--out", str(tmp_path / "run"), *[x for s in sets for x in ("--set", s)]]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_the_image_task_names_its_validation() -> None:
    """A config without a validation slice gets one of a tenth of the training split from the spec."""
    from contrastkit.tasks import get_task

    spec = get_task("image").validation(load_config("digits-simclr", []))
    assert (spec.metric, spec.direction, spec.every) == ("val_knn_acc", "max", "eval.monitor_every")
    assert spec.overrides == ("eval.val_size=143",)  # digits' training split: 1,437 images
    assert get_task("image").validation(load_config("digits-simclr", ["eval.val_size=300"])).overrides == ()
