"""The command line end to end on tiny data, and its answers to user mistakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from contrastkit.cli import main

from .conftest import tiny_overrides


def _sets(**extra: object) -> list[str]:
    out: list[str] = []
    for pair in tiny_overrides(**extra):
        out += ["--set", pair]
    return out


def test_train_evaluate_embed_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *_sets()]) == 0
    out = capsys.readouterr().out
    for name in ("ssl", "random_init", "raw_pixels", "kNN", "linear", "results:"):
        assert name in out
    results = json.loads((run / "results.json").read_text())
    assert results["train"]["steps"] == 6
    enc = results["eval"]["encoders"]
    assert set(enc) == {"ssl", "random_init", "raw_pixels"}
    for r in enc.values():
        assert 0.0 <= r["linear_probe"]["accuracy"] <= 1.0
        assert len(r["knn"]["confusion"]) == 10
    for name in ("training_curves.png", "embedding_tsne.png", "nearest_neighbors.png"):
        assert (run / "plots" / name).stat().st_size > 1000
    assert (run / "encoder.safetensors").is_file()
    assert (run / "config.yaml").is_file() and (run / "train_log.csv").is_file()
    assert any((run / "tensorboard").iterdir())

    # re-evaluate the finished run
    assert main(["evaluate", str(run), "--set", "eval.plots=false", "--set", "eval.baselines=false"]) == 0
    assert "ssl" in capsys.readouterr().out

    # embed the test split
    feats = tmp_path / "feats.npy"
    assert main(["embed", str(run), "--data", "digits:test", "--out", str(feats)]) == 0
    x = np.load(feats)
    y = np.load(tmp_path / "feats.labels.npy")
    assert x.shape == (y.shape[0], 32) and np.isfinite(x).all()


def test_resume_a_finished_run_is_a_no_op(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--no-eval", *_sets()]) == 0
    assert main(["train", "--out", str(run), "--resume", "--no-eval"]) == 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", "--set", "method.temperature=0"], "method.temperature must be > 0"),
        (["train", "--set", "train.batch_size=1"], "train.batch_size must be >= 2"),
        (["train", "--set", "train.epoch=2"], "did you mean 'epochs'"),
        (["train", "no-such-recipe"], "unknown recipe 'no-such-recipe'"),
        (["train", "--set", "data.name=folder", "--set", "data.root=/nonexistent/images"], "/nonexistent/images"),
        (["evaluate", "/nonexistent/run"], "not a contrastkit run folder"),
        (["train", "--set", "train.batch_size=100000", "--no-eval"], "larger than the data set"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(
    args: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if args[0] == "train":
        args = [*args, "--out", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("contrastkit: error:") and fragment in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_existing_run_folder_without_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "something").write_text("x")
    assert main(["train", "--out", str(run), *_sets()]) == 2
    assert "already exists; pass --resume" in capsys.readouterr().err


def test_console_entry_point_runs_as_module() -> None:
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "contrastkit", "recipes"], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "digits-simclr" in proc.stdout.split()


@pytest.mark.parametrize("data", ["memory", "store"])
def test_killed_run_resumes_to_the_same_weights(tmp_path: Path, data: str) -> None:
    """SIGKILL in the middle of training (mid-epoch: 22 steps an epoch), then --resume: identical
    to the uninterrupted run — from in-memory digits and from a store of them."""
    import signal
    import time

    import torch

    from contrastkit.train import load_checkpoint

    sets = _sets(**{"train.max_steps": 150, "train.checkpoint_every": 5, "train.num_threads": 1})
    if data == "store":
        assert main(["prepare", "digits", "--out", str(tmp_path / "s"), "--workers", "0", "--quiet"]) == 0
        sets += ["--set", "data.name=store", "--set", f"data.root={tmp_path / 's'}"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["train", "--out", str(full), "--no-eval", "--quiet", *sets]) == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "contrastkit", "train", "--out", str(cut), "--no-eval", "--quiet", *sets],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    ckpt = cut / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    killed_at = load_checkpoint(ckpt)["step"]
    assert 0 < killed_at < 150
    assert main(["train", "--out", str(cut), "--resume", "--no-eval", "--quiet"]) == 0
    a = load_checkpoint(full / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(ckpt)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_doctor_says_what_is_found_and_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    from contrastkit import doctor

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else real(name, *a))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr("contrastkit.data.image.datasets.DEBIAN_FASHION_MNIST", tmp_path / "none")
    text = doctor.report()
    assert "torch " in text and "device " in text and "threads " in text
    assert "faiss-cpu                missing" in text
    assert "pip install 'contrastkit[faiss]'   # faiss-cpu" in text
    assert "fashion-mnist  not found" in text and "apt-get install dataset-fashion-mnist" in text
    assert len(text.splitlines()) < 45  # one screen
