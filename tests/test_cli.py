"""The command line end to end on tiny data (one training, in-process, shared by the tests that
read it), and its answers to user mistakes: help, version, one-line errors and exit codes.
Resuming after a kill, SIGTERM and --nproc are the loop's, tested once in tests/training/."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from contrastkit.cli import main
from contrastkit.errors import install_hint
from contrastkit.version import __version__

from .conftest import tiny_overrides


def _sets(**extra: object) -> list[str]:
    out: list[str] = []
    quick = {"train.num_threads": 1, "train.checkpoint_every": 1000, "eval.max_train_samples": 500,
             "eval.max_test_samples": 200}
    for pair in tiny_overrides(**{**quick, **extra}):
        out += ["--set", pair]
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, Any]]:
    """One `contrastkit train` with evaluation: the run folder, what it printed, its results.json
    as written by training (tests below may re-evaluate the run)."""
    run = tmp_path_factory.mktemp("cli") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["train", "--out", str(run), *_sets()]) == 0
    return run, printed.getvalue(), json.loads((run / "results.json").read_text())


def test_train_trains_evaluates_and_fills_the_run_folder(trained: tuple[Path, str, dict[str, Any]]) -> None:
    run, out, results = trained
    for name in ("trained 6 steps", "ssl", "random_init", "raw_pixels", "kNN", "linear", "results:"):
        assert name in out, name
    assert results["train"]["steps"] == 6 and results["train"]["unit"] == "images"
    assert results["train"]["throughput"] > 0
    enc = results["eval"]["encoders"]
    assert set(enc) == {"ssl", "random_init", "raw_pixels"}
    for r in enc.values():
        assert 0.0 <= r["linear_probe"]["accuracy"] <= 1.0
        assert len(r["knn"]["confusion"]) == 10
    for name in ("training_curves.png", "embedding_tsne.png", "nearest_neighbors.png"):
        assert (run / "plots" / name).stat().st_size > 1000
    assert (run / "encoder.safetensors").is_file() and (run / "report.html").is_file()
    assert (run / "config.yaml").is_file()
    header = (run / "train_log.csv").read_text().splitlines()[0].split(",")
    assert "loss" in header and "images_per_sec" in header  # <unit>_per_sec
    assert any((run / "tensorboard").iterdir())


def test_evaluate_and_embed_a_finished_run(
    trained: tuple[Path, str, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = trained[0]
    capsys.readouterr()
    quick = ["eval.plots=false", "eval.baselines=false", "eval.linear_probe=false", "eval.few_label_shots=[1]"]
    assert main(["evaluate", str(run), *[x for o in quick for x in ("--set", o)]]) == 0
    assert "ssl" in capsys.readouterr().out
    # the overrides applied to this evaluation, which replaced the run's results
    ev = json.loads((run / "results.json").read_text())["eval"]
    assert set(ev["encoders"]) == {"ssl"} and "linear_probe" not in ev["encoders"]["ssl"]

    feats = tmp_path / "feats.npy"
    assert main(["embed", str(run), "--data", "digits:test", "--out", str(feats)]) == 0
    x = np.load(feats)
    y = np.load(tmp_path / "feats.labels.npy")
    assert x.shape == (y.shape[0], 32) and y.shape[0] == 360 and np.isfinite(x).all()  # width 8: 32 features


def test_resume_a_finished_run_is_a_no_op(trained: tuple[Path, str, dict[str, Any]], tmp_path: Path) -> None:
    """`train --resume` on a finished run trains no further step, keeps the weights and exits 0."""
    from contrastkit.runs import checkpoint_part, load_run_checkpoint

    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    before = load_run_checkpoint(run)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["train", "--out", str(run), "--resume", "--no-eval", "--quiet"]) == 0
    after = load_run_checkpoint(run)
    assert after["step"] == before["step"] == 6
    a, b = checkpoint_part(before, "model"), checkpoint_part(after, "model")
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert "trained 6 steps" in printed.getvalue()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", "no-such-recipe"], "unknown recipe 'no-such-recipe'"),
        (["train", "--set", "data.name=folder", "--set", "data.root=/nonexistent/images"], "/nonexistent/images"),
        (["train", "--set", "train.batch_size=100000", "--no-eval"], "larger than the data set"),
        (["train", "--resume", "digits-simclr"], "--resume continues the run's own recipe"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(
    args: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*args, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("contrastkit: error:") and fragment in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_existing_run_folder_without_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "something").write_text("x")
    assert main(["train", "--out", str(run), *_sets()]) == 2
    assert "already exists; pass --resume" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["something"]  # nothing written


def test_help_version_and_recipes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0  # no command: the help
    out = capsys.readouterr().out
    assert out.startswith("usage: contrastkit") and "train" in out and "doctor" in out
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"contrastkit {__version__}"
    with pytest.raises(SystemExit) as info:
        main(["trian"])
    assert info.value.code == 2 and "invalid choice: 'trian'" in capsys.readouterr().err
    assert main(["recipes"]) == 0
    assert "digits-simclr" in capsys.readouterr().out.split()


def test_recipes_table_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    from contrastkit.recipes import recipe_names

    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "task", "method", "data", "extra"]
    rows = {line.split()[0]: line.split() for line in lines[1 : 1 + len(recipe_names())]}
    assert sorted(rows) == recipe_names()
    assert rows["digits-simclr"] == ["digits-simclr", "image", "simclr", "digits", "-"]
    assert rows["sick-simcse"] == ["sick-simcse", "text", "simcse", "sick:train", "text"]
    assert rows["cartpole-pixels-curl"][1:] == ["rl", "curl", "CartPole-v1", "rl"]
    assert rows["fashion-mnist-dcgan"][1:3] == ["gan", "dcgan"] and rows["ml100k-lightgcn"][3] == "ml-100k"
    assert main(["recipes", "show", "digits-simclr"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("#") and "name: digits-simclr\n" in shown  # the file as shipped, comments included
    assert main(["recipes", "show", "digit-simclr"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("contrastkit: error: unknown recipe 'digit-simclr' (did you mean 'digits-simclr'?)")


def test_console_entry_point_runs_as_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "contrastkit", "--version"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"contrastkit {__version__}"


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
    assert f"{install_hint('faiss')}   # faiss-cpu" in text
    assert "fashion-mnist  not found" in text and "apt-get install dataset-fashion-mnist" in text
    assert "  rl       stable-baselines3 " in text and "  atari    ale-py " in text
    assert len(text.splitlines()) < 50  # one screen


def test_install_hint_fits_the_installation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from contrastkit import errors

    checkout = Path(errors.__file__).resolve().parents[2]  # the tests run from a checkout (src/ layout)
    monkeypatch.chdir(checkout)
    assert install_hint("text") == 'pip install -e ".[text]"'
    monkeypatch.chdir(tmp_path)
    assert install_hint("text", "faiss") == f'pip install -e "{checkout}[text,faiss]"'
    monkeypatch.setattr(errors, "_checkout", lambda: None)  # a wheel in site-packages
    assert install_hint("text") == "pip install 'contrastkit[text]'"
