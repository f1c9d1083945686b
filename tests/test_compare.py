"""`contrastkit compare`: several recipes, one budget, one table of each task's ``compare_row``
figures; mismatched recipes are refused.

compare starts one ``python -m contrastkit train ...`` per recipe; here that command runs in this
process (``contrastkit.cli.main`` on the same argv) so that the tests pay for training and
evaluation, not for importing torch once per recipe. The command line compare builds (the
budget, the overrides each task reads) is what is run.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from contrastkit.cli import main
from contrastkit.recipes import read_recipe
from contrastkit.tasks import TrainedRun
from contrastkit.tasks.text import TextRun

from .tasks.test_sequences import write_topic_words


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """compare's training commands, run in-process; returns the list of those run."""
    ran: list[list[str]] = []

    def run(cmd: list[str], *, stdout: Any, stderr: Any, env: dict[str, str], check: bool) -> subprocess.CompletedProcess[str]:
        assert cmd[:4] == [sys.executable, "-m", "contrastkit", "train"] and stderr == subprocess.STDOUT and not check
        ran.append(cmd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stdout):
            code = main(cmd[3:])
        return subprocess.CompletedProcess(cmd, code)

    monkeypatch.setattr("contrastkit.compare.subprocess.run", run)
    return ran


def _tiny_recipe(tmp_path: Path, base: str, **method: object) -> str:
    data = read_recipe(base)
    data["model"].update({"width": 8, "projection_dim": 16, "projection_hidden_dim": 32})
    data["method"].update(method)
    data["train"].update({"batch_size": 64, "log_every": 1, "num_threads": 1})
    data["eval"].update({"knn_k": 20, "few_label_draws": 2})
    path = tmp_path / f"{base}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _sets(cmd: list[str]) -> list[str]:
    return [cmd[i + 1] for i, x in enumerate(cmd) if x == "--set"]


def test_compare_two_methods_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], commands: list[list[str]]
) -> None:
    recipes = [_tiny_recipe(tmp_path, "digits-simclr"), _tiny_recipe(tmp_path, "digits-byol")]
    out = tmp_path / "cmp"
    code = main(["compare", *recipes, "--budget-minutes", "0.02", "--out", str(out), "--shots", "5",
                 "--set", "eval.baselines=false"])
    text = capsys.readouterr().out
    assert code == 0, text
    # the budget, long enough epochs to fill it, the --shots probe, no pictures; the user's overrides last
    assert [c[4] for c in commands] == recipes
    for cmd in commands:
        assert _sets(cmd) == ["train.time_budget_minutes=0.02", "train.epochs=100000", "eval.few_label_shots=[5]",
                              "eval.finetune=false", "eval.plots=false", "eval.baselines=false"]
    lines = text.splitlines()
    head = lines.index("after 0.02 min of training each (accuracies in %):")
    assert lines[head + 1].split() == ["recipe", "method", "kNN", "linear", "5/class", "eff.", "rank", "collapsed", "at",
                                       "train", "s", "steps", "peak", "MB"]
    assert [line.split()[:2] for line in lines[head + 3 : head + 5]] == [[recipes[0], "simclr"], [recipes[1], "byol"]]
    runs = json.loads((out / "compare.json").read_text())["runs"]
    assert [r["method"] for r in runs] == ["simclr", "byol"]
    for r in runs:
        res = json.loads((Path(r["run_dir"]) / "results.json").read_text())
        assert r["exit_code"] == 0 and res["train"]["stopped_by"] == "time_budget"
        assert r["steps"] == res["train"]["steps"] > 1 and r["train_seconds"] < 10 and r["peak_memory_mb"] > 0
        fig, ssl = r["figures"], res["eval"]["encoders"]["ssl"]
        assert set(fig) == {"kNN", "linear", "5/class", "eff. rank", "collapsed at"}
        assert float(fig["kNN"]) == pytest.approx(100 * ssl["knn"]["accuracy"], abs=0.05) and float(fig["kNN"]) > 30
        assert float(fig["linear"]) == pytest.approx(100 * ssl["linear_probe"]["accuracy"], abs=0.05)
        few = ssl["few_label"]["shots"]["5"]
        assert fig["5/class"] == f"{100 * few['mean']:.1f}±{100 * few['std']:.1f}" and len(few["accuracies"]) == 2
        assert float(fig["eff. rank"]) == pytest.approx(res["eval"]["diagnostics"]["eff_rank"], abs=0.05)
        assert fig["collapsed at"] is None
        assert (Path(r["run_dir"]).parent / f"{Path(r['run_dir']).name}.log").stat().st_size > 0


def test_compare_rl_recipes_get_only_the_keys_rl_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], commands: list[list[str]]
) -> None:
    """rl reads neither train.epochs nor the image probes' keys: compare must not pass them (they
    are errors for rl) and shows rl's own figures."""
    pytest.importorskip("stable_baselines3")
    sets = ["rl.eval_episodes=1", "rl.eval_every=0", "rl.learning_starts=20", "rl.train_freq=10", "rl.gradient_steps=1",
            "train.batch_size=16", "train.num_threads=1"]
    out = tmp_path / "cmp"
    code = main(["compare", "cartpole-state", "--budget-minutes", "0.005", "--out", str(out),
                 *(x for s in sets for x in ("--set", s))])
    text = capsys.readouterr().out
    assert code == 0, text
    assert [_sets(c) for c in commands] == [["train.time_budget_minutes=0.005", *sets]]
    lines = text.splitlines()
    head = lines.index("after 0.005 min of training each:")
    assert lines[head + 1].split() == ["recipe", "method", "return", "return", "std", "train", "s", "steps", "peak", "MB"]
    runs = json.loads((out / "compare.json").read_text())["runs"]
    assert len(runs) == 1 and lines[head + 3].split()[:2] == ["cartpole-state", "state"]
    for r in runs:
        res = json.loads((Path(r["run_dir"]) / "results.json").read_text())
        assert res["train"]["stopped_by"] == "time_budget"  # rl.steps (10,000) is far away
        assert r["figures"] == {"return": res["eval"]["final_return"]["mean"], "return std": 0.0}
        assert r["figures"]["return"] >= 8


def test_compare_refuses_mismatched_recipes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code = main(["compare", "digits-simclr", "fashion-mnist-simclr", "--budget-minutes", "1",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "same data" in err and "fashion-mnist" in err
    code = main(["compare", "digits-simclr", "--budget-minutes", "0", "--out", str(tmp_path / "y")])
    assert code == 2 and "--budget-minutes must be > 0" in capsys.readouterr().err
    code = main(["compare", "digits-simclr", "ml100k-lightgcn", "--budget-minutes", "1", "--out", str(tmp_path / "z")])
    assert (
        code == 2
        and "compare needs recipes of one task; got digits-simclr: image, ml100k-lightgcn: recsys" in capsys.readouterr().err
    )
    # a task whose runs have no compare_row figures is refused, naming the tasks that have them
    monkeypatch.setattr(TextRun, "compare_row", TrainedRun.compare_row)
    code = main(["compare", "sick-simcse", "--budget-minutes", "1", "--out", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "compare works on recipes of task image, image_text, recsys, rl, sequences, gan; got task text" in err
    assert not any((tmp_path / d).exists() for d in "xyzw")  # refused before anything is written


def test_compare_word2vec_settings_on_their_word_similarity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], commands: list[list[str]]
) -> None:
    """Every task's runs have figures to compare (text and image–text: their table's headline
    figures; recsys and item2vec: Recall / NDCG@20): here two word2vec window sizes, scored on
    word pairs."""
    text, pairs = write_topic_words(tmp_path, 300)
    wide = tmp_path / "w2v-window-8.yaml"
    wide.write_text(yaml.safe_dump({**read_recipe("text-word2vec"), "name": "w2v-window-8",
                                    "method": {**read_recipe("text-word2vec")["method"], "window": 8}}))
    out = tmp_path / "cmp"
    code = main(["compare", "text-word2vec", str(wide), "--budget-minutes", "0.005", "--out", str(out),
                 "--set", f"sequences.text_file={text}", "--set", f"sequences.similarity_file={pairs}",
                 "--set", "sequences.min_count=1", "--set", "method.embedding_dim=16", "--set", "train.batch_size=256",
                 "--set", "train.progress=false"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert [_sets(c)[:2] for c in commands] == [["train.time_budget_minutes=0.005", "train.epochs=100000"]] * 2
    runs = json.loads((out / "compare.json").read_text())["runs"]
    for r in runs:
        sim = json.loads((Path(r["run_dir"]) / "results.json").read_text())["eval"]["similarity"]
        assert r["figures"] == {"similarity ρ": f"{100 * sim['spearman']:.1f}", "pairs in vocab %": "100.0"}
        assert r["exit_code"] == 0 and r["steps"] > 1
    lines = printed.splitlines()
    head = lines.index("after 0.005 min of training each:")
    assert lines[head + 1].split()[:6] == ["recipe", "method", "similarity", "ρ", "pairs", "in"]
    assert [line.split()[:3] for line in lines[head + 3: head + 5]] == [
        ["text-word2vec", "skipgram", runs[0]["figures"]["similarity ρ"]],
        [str(wide), "skipgram", runs[1]["figures"]["similarity ρ"]]]
