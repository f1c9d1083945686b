"""`contrastkit sweep`'s space and arguments: each SPEC form parsed to Optuna's distribution, and
every bad input refused in one line (exit 2) before any trial starts and before any folder is made."""

from __future__ import annotations

from pathlib import Path

import pytest

from contrastkit.cli import main
from contrastkit.sweep.plan import make_plan
from contrastkit.sweep.space import as_set, parse_space


def test_each_spec_form_becomes_its_distribution() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    params = parse_space(["method.temperature=0.05:0.5:log", "optim.lr=0.001:0.01", "model.width=int:8:32",
                          "optim.name=adamw,sgd", "method.similarity=cosine,dot", "train.channels_last=true,false"])
    dists = [p.distribution() for p in params]
    assert dists[0] == FloatDistribution(0.05, 0.5, log=True)
    assert dists[1] == FloatDistribution(0.001, 0.01)
    assert dists[2] == IntDistribution(8, 32)
    assert dists[3] == CategoricalDistribution(("adamw", "sgd"))
    assert dists[5] == CategoricalDistribution((True, False))  # values read like --set values
    assert params[2].grid() == list(range(8, 33)) and params[0].grid() is None
    assert [as_set("optim.name", "sgd"), as_set("train.channels_last", False)] == ["optim.name=sgd",
                                                                                   "train.channels_last=false"]


def test_plan_switches_the_validation_on_and_fills_the_budget() -> None:
    plan = make_plan("digits-simclr", ["method.temperature=0.1:0.5"], trials=4, budget_minutes=0.5, validate_every=20)
    assert (plan.metric, plan.direction, plan.task) == ("val_knn_acc", "max", "image")
    assert plan.budget_sets == ["train.time_budget_minutes=0.5", "train.epochs=100000"]
    assert plan.validation_sets[-1] == "eval.monitor_every=20" and plan.validation_sets[0].startswith("eval.val_size=")
    cfg = plan.trial_config({"method.temperature": 0.3})
    assert cfg.eval.val_size > 0 and cfg.eval.monitor_every == 20 and cfg.method.temperature == 0.3
    final = plan.final_overrides({"method.temperature": 0.3})
    assert not any(o.startswith("eval.") for o in final)  # the final runs train on the whole training split


BAD = [
    (["--space", "method.temprature=0.1:0.5"], "--space method.temprature=0.1:0.5: method.temprature is not an option"),
    (["--space", "method.temperature=-1:0.5"], "--space method.temperature=-1:0.5: method.temperature must be > 0"),
    (["--space", "model.width=int:0:16"], "model.width must be >= 1, got 0"),
    (["--space", "model.width=8:16"], "(an integer option: use int:low:high)"),
    (["--space", "optim.name=adamw,lars,foo"], "unknown optim.name 'foo'"),
    ([], "the search space is empty"),
    (["--space", "method.temperature=0.1-0.5"], "--space method.temperature=0.1-0.5: expected low:high"),
    (["--space", "model.width=int:8"], "expected int:low:high"),
    (["--space", "method.temperature=0.5:0.1"], "low 0.5 must be below high 0.1"),
    (["--space", "method.temperature=0:1:log"], "a log range needs low > 0"),
    (["--space", "method.temperature=0.1:0.5", "--space", "method.temperature=0.2,0.3"], "more than once"),
    (["--space", "method.temperature=0.1:0.5", "--metric", "val_loss"],
     "--metric 'val_loss': task image validates this recipe with 'val_knn_acc' only"),
    (["--space", "method.temperature=0.1:0.5", "--sampler", "grid"], "--sampler grid needs int:low:high or a,b,c"),
    (["--space", "method.temperature=0.1:0.5", "--sampler", "bayes"], "unknown --sampler 'bayes'"),
    (["--space", "method.temperature=0.1:0.5", "--trials", "0"], "--trials must be >= 1"),
    (["--space", "method.temperature=0.1:0.5", "--set", "train.epochs=0"], "train.epochs"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_bad_input_is_one_line_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "sweep"
    trials = [] if "--trials" in args else ["--trials", "2"]
    code = main(["sweep", "digits-simclr", *trials, "--out", str(out), *args])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("contrastkit: error: "), captured.err
    assert message in lines[0]
    assert not out.exists() and not captured.out  # no folder, no trial


def test_resume_needs_a_sweep_and_a_sweep_needs_a_new_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "--resume: no sweep in" in capsys.readouterr().err and not (tmp_path / "none").exists()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    assert main(["sweep", "digits-simclr", "--space", "method.temperature=0.1:0.5", "--trials", "2",
                 "--out", str(tmp_path / "used")]) == 2
    assert "already exists; continue it with --resume" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["x"]
