"""`contrastkit compare`: several recipes, one budget, one table; mismatched data is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from contrastkit.cli import main
from contrastkit.config import read_recipe


def _tiny_recipe(tmp_path: Path, base: str, **method: object) -> str:
    data = read_recipe(base)
    data["model"].update({"width": 8, "projection_dim": 16, "projection_hidden_dim": 32})
    data["method"].update(method)
    data["train"].update({"batch_size": 64, "log_every": 1})
    data["eval"].update({"knn_k": 20, "few_label_draws": 2})
    path = tmp_path / f"{base}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_compare_two_methods_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipes = [_tiny_recipe(tmp_path, "digits-simclr"), _tiny_recipe(tmp_path, "digits-byol")]
    out = tmp_path / "cmp"
    code = main(["compare", *recipes, "--budget-minutes", "0.03", "--out", str(out), "--shots", "5",
                 "--set", "eval.baselines=false"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "5/class" in text and "peak MB" in text
    runs = json.loads((out / "compare.json").read_text())["runs"]
    assert [r["method"] for r in runs] == ["simclr", "byol"]
    for r in runs:
        assert r["exit_code"] == 0
        assert 0.1 < r["knn"] <= 1 and 0.1 < r["linear"] <= 1 and r["few_label"] is not None
        assert r["train_seconds"] < 20 and r["peak_memory_mb"] > 0 and r["effective_rank"] > 1


def test_compare_refuses_different_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compare", "digits-simclr", "fashion-mnist-simclr", "--budget-minutes", "1",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "same data" in err and "fashion-mnist" in err
    code = main(["compare", "digits-simclr", "--budget-minutes", "0", "--out", str(tmp_path / "y")])
    assert code == 2 and "--budget-minutes must be > 0" in capsys.readouterr().err
    code = main(["compare", "digits-simclr", "ml100k-lightgcn", "--budget-minutes", "1", "--out", str(tmp_path / "z")])
    assert code == 2 and "compare needs recipes of one task; got digits-simclr: image, ml100k-lightgcn: recsys" in capsys.readouterr().err
    code = main(["compare", "ml100k-lightgcn", "--budget-minutes", "1", "--out", str(tmp_path / "w")])
    assert code == 2 and "compare works on recipes of task image" in capsys.readouterr().err


def test_compare_rl_recipes_within_the_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("stable_baselines3")
    sets = ["rl.probe_steps=100", "rl.eval_episodes=1", "rl.eval_every=50", "rl.learning_starts=20",
            "rl.buffer_size=300", "rl.height=24", "rl.width=48", "rl.crop_margin=2", "train.batch_size=16"]
    out = tmp_path / "cmp"
    code = main(["compare", "cartpole-pixels-curl", "cartpole-pixels", "--budget-minutes", "0.03", "--out", str(out),
                 *(x for s in sets for x in ("--set", s))])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "results after 0.03 min" in text and "probe R²" in text and text.count("pixels") >= 2
    runs = json.loads((out / "compare.json").read_text())["runs"]
    assert [r["method"] for r in runs] == ["curl", "pixels"]
    for r in runs:
        res = json.loads((Path(r["run_dir"]) / "results.json").read_text())
        assert res["train"]["stopped_by"] == "time_budget"  # rl.steps (10,000) is far away
        assert r["train_seconds"] < 15 and r["figures"]["return"] > 0
