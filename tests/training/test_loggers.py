"""train.loggers: CSV + TensorBoard by default, mlflow and W&B (offline, no network) behind the
same interface, one-line errors, and resume without duplicated steps."""

from __future__ import annotations

import importlib.util
import json
import re
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from contrastkit.cli import main
from contrastkit.errors import UserError, install_hint
from contrastkit.recipes import load_config
from contrastkit.runner import train_run
from contrastkit.runs import new_run_dir
from contrastkit.training.loggers import LOG_FIELDS, Loggers, check_installed, read_tracker_ids

from ..conftest import InterruptAt, Interrupted, tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")

# 4-pixel-wide encoder, small batches: each run is a few steps of almost nothing
FAST = {"model.width": 4, "train.batch_size": 32, "train.max_steps": 6, "train.checkpoint_every": 3,
        "train.keep_freed_memory": False}


def _cfg(**extra: Any) -> Any:
    return load_config("digits-simclr", tiny_overrides(**{**FAST, **extra}))


def train(cfg: Any, run: Path, **options: Any) -> Any:
    return train_run(cfg, run, **options)[0]


def _csv_steps(run: Path) -> list[int]:
    return [int(line.split(",")[0]) for line in (run / "train_log.csv").read_text().splitlines()[1:]]


def test_default_is_csv_and_tensorboard_as_before(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert _cfg().train.loggers == ["csv", "tensorboard"]
    row = {"epoch": 0.1, "lr": 0.01, "images_per_sec": 9.0, "elapsed_sec": 1.0, "loss": 2.0, "zeta": 1.0, "alpha": 3.0}
    with Loggers.open(["csv", "tensorboard"], tmp_path, start_step=0, config={"a": 1}) as loggers:
        assert [name for name, _ in loggers.loggers] == ["csv", "tensorboard"]
        for step in range(1, 5):
            loggers.log_metrics(step, {**row, "loss": 2.0 - step / 10})
    lines = (tmp_path / "train_log.csv").read_text().splitlines()
    assert lines[0].split(",") == [*LOG_FIELDS, "images_per_sec", "elapsed_sec", "alpha", "zeta"]
    assert _csv_steps(tmp_path) == [1, 2, 3, 4]
    # a resume from step 2: the CSV rows and TensorBoard events after it are dropped, then redone
    with Loggers.open(["csv", "tensorboard"], tmp_path, start_step=2, config={}) as loggers:
        assert _csv_steps(tmp_path) == [1, 2]
        for step in (3, 4):
            loggers.log_metrics(step, row)
    assert _csv_steps(tmp_path) == [1, 2, 3, 4]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "wandb").exists()
    assert read_tracker_ids(tmp_path) == {}


def test_unknown_repeated_or_missing_logger_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sets = ["--set", "train.progress=false", "--no-eval", "--quiet"]
    assert main(["train", "--set", "train.loggers=[csv, neptune]", *sets, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown train.loggers 'neptune'" in err[0]
    assert "allowed: csv, mlflow, tensorboard, wandb" in err[0]
    assert main(["train", "--set", "train.loggers=[csv, csv]", *sets, "--out", str(tmp_path / "b")]) == 2
    assert "train.loggers lists csv more than once" in capsys.readouterr().err

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UserError, match=re.escape(f"wandb is not installed; {install_hint('trackers')}")):
        check_installed(["csv", "wandb"])
    check_installed(["csv", "tensorboard", "mlflow"])
    overrides = [x for s in tiny_overrides(**{**FAST, "train.loggers": "[wandb]"}) for x in ("--set", s)]
    assert main(["train", *overrides, "--no-eval", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"contrastkit: error: train.loggers: wandb is not installed; {install_hint('trackers')}"]


def test_mlflow_records_every_step_once_across_a_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    cfg = _cfg(**{"train.loggers": "[csv, tensorboard, mlflow]"})
    run = new_run_dir(cfg, str(tmp_path / "run"), resume=False)
    with pytest.raises(Interrupted):  # steps 4 and 5 are logged, the checkpoint is at step 3
        train(cfg, run, progress=False, verbose=False, callbacks=[InterruptAt(5)])
    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    run_id = read_tracker_ids(run)["mlflow"]["run_id"]
    assert client.get_run(run_id).info.status == "FAILED"
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [1, 2, 3, 4, 5]

    summary = train(cfg, run, resume=True, progress=False, verbose=False)
    assert summary.steps == 6
    assert _csv_steps(run) == [1, 2, 3, 4, 5, 6]
    experiment = client.get_experiment_by_name("contrastkit")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]  # the same mlflow run continued
    assert runs[0].info.status == "FINISHED"
    history = client.get_metric_history(run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3, 4, 5, 6]
    csv_loss = [float(line.split(",")[2]) for line in (run / "train_log.csv").read_text().splitlines()[1:]]
    assert [m.value for m in history] == pytest.approx(csv_loss)
    params = runs[0].data.params
    assert params["train.max_steps"] == "6" and params["method.name"] == "simclr"
    assert json.loads(params["train.loggers"]) == ["csv", "tensorboard", "mlflow"]


def _wandb_history(path: Path) -> list[dict[str, Any]]:
    """History rows of an offline W&B run file (LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    raw, pos, block, chunk, rows = path.read_bytes(), 7, 32768, b"", []
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        if kind == 0 and length == 0:
            break
        chunk += raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item})
    return rows


def test_wandb_offline_records_the_loss_per_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": str(tmp_path / "cfg"),
                       "WANDB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_DATA_DIR": str(tmp_path / "data")}.items():
        monkeypatch.setenv(var, value)
    cfg = _cfg(**{"train.loggers": "[wandb]", "train.max_steps": 4})
    run = new_run_dir(cfg, str(tmp_path / "run"), resume=False)
    train(cfg, run, progress=False, verbose=False)
    run_id = read_tracker_ids(run)["wandb"]["id"]
    (offline,) = (run / "wandb").glob(f"offline-run-*-{run_id}")
    rows = _wandb_history(offline / f"run-{run_id}.wandb")
    for _ in range(30):  # wandb's service process may still be writing the file on a busy machine
        if len(rows) >= 4:
            break
        time.sleep(0.5)
        rows = _wandb_history(offline / f"run-{run_id}.wandb")
    assert [r["_step"] for r in rows] == [1, 2, 3, 4]
    assert all(isinstance(r["train/loss"], float) for r in rows) and "train/lr" in rows[0]
    assert not (run / "train_log.csv").exists() and not (run / "tensorboard").exists()  # only what was asked
