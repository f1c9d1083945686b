"""A sweep killed with SIGKILL mid-trial continues with --resume: no finished trial is lost, the
killed one continues from its run folder's last checkpoint, and the study ends with N counted
trials. Two worker processes on one SQLite study run N trials together, none twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from contrastkit.cli import main

from .helpers import SPACE, sets


def _study(out: Path) -> Any:
    return optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'study.db'}")


def test_sigkill_mid_trial_then_resume_loses_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sw"
    # 12 steps a trial, a checkpoint and a validation every 3
    cmd = [sys.executable, "-m", "contrastkit", "sweep", "digits-simclr", *SPACE, "--trials", "3", "--validate-every", "3",
           "--out", str(out), "--no-final", *sets("train.max_steps=12")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    checkpoint = out / "trials" / "trial-0001" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    output = proc.communicate()[0]
    assert checkpoint.exists(), output
    before = {t.number: t for t in _study(out).get_trials()}
    assert before[0].state.name == "COMPLETE" and before[1].state.name == "RUNNING", output
    first = json.loads((out / "trials" / "trial-0000" / "results.json").read_text())

    assert main(["sweep", "--out", str(out), "--resume"]) == 0
    text = capsys.readouterr().out
    trials = _study(out).get_trials()
    counted = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(counted) == 3 and len(trials) == 4, text  # 0, 1 (interrupted), its continuation, one more
    assert trials[0].value == before[0].value  # finished before the kill: kept as it was
    assert json.loads((out / "trials" / "trial-0000" / "results.json").read_text()) == first
    assert trials[1].state.name == "FAIL" and trials[1].user_attrs["reason"] == "interrupted"
    again = next(t for t in trials if t.user_attrs.get("resumed_from") == 1)
    assert again.params == before[1].params and again.user_attrs["run_dir"] == str(out / "trials" / "trial-0001")
    resumed_at = again.user_attrs["resumed_at_step"]
    assert 3 <= resumed_at < 12  # continued from its checkpoint, not from step 0
    # the restored curve is reported first, then the new points: every 3 steps, once each
    assert sorted(again.intermediate_values) == [3, 6, 9, 12]
    res = json.loads((out / "trials" / "trial-0001" / "results.json").read_text())
    assert res["train"]["steps"] == 12 and res["validation"]["value"] == pytest.approx(again.value)
    assert sorted(p.name for p in (out / "trials").iterdir()) == [f"trial-{i:04d}" for i in (0, 1, 3)]
    assert "trial 1 was interrupted" in text and "trial 2 (continues trial 1)" in text


def test_two_workers_on_one_study_run_n_trials_once_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sw"
    assert main(["sweep", "digits-simclr", *SPACE, "--trials", "4", "--jobs", "2", "--sampler", "random",
                 "--out", str(out), "--no-final", *sets()]) == 0
    trials = _study(out).get_trials()
    ran = [t for t in trials if t.user_attrs.get("reason") != "surplus"]
    assert [t.state.name for t in ran] == ["COMPLETE"] * 4
    assert len({t.number for t in ran}) == 4 and len({t.user_attrs["run_dir"] for t in ran}) == 4
    assert all(t.user_attrs["pid"] != os.getpid() for t in ran)  # run by the workers
    folders = sorted((out / "trials").iterdir())
    assert len(folders) == 4
    for folder in folders:  # each trained once, from step 0 to the end
        res = json.loads((folder / "results.json").read_text())
        trial = next(t for t in ran if t.user_attrs["run_dir"] == str(folder))
        assert res["sweep"]["trial"] == trial.number and res["train"]["steps"] == 6
        assert "resumed_at_step" not in trial.user_attrs
