"""`contrastkit sweep` end to end on the digits: trials are run folders chosen on validation, the
best becomes a recipe trained and tested once against the default; the pruning callback stops a
trial its pruner prunes; a failing trial is recorded and the sweep goes on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from contrastkit.cli import main
from contrastkit.evaluate.suite import compare_figures
from contrastkit.recipes import load_config
from contrastkit.sweep.plan import make_plan
from contrastkit.sweep.study import run_trial

from .helpers import SPACE, TINY, sets


def _study(out: Path) -> Any:
    return optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'study.db'}")


def test_three_trials_then_the_best_recipe_trained_and_tested(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sw"
    code = main(["sweep", "digits-simclr", *SPACE, "--trials", "3", "--validate-every", "3", "--out", str(out), *sets()])
    text = capsys.readouterr().out
    assert code == 0, text
    study = _study(out)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    for t in trials:  # an ordinary run folder, trained and validated, never tested
        res = json.loads((out / "trials" / f"trial-{t.number:04d}" / "results.json").read_text())
        assert res["validation"]["value"] == pytest.approx(t.value) and "eval" not in res
        assert res["config"]["eval"]["val_size"] > 0 and sorted(t.intermediate_values) == [3, 6]
        assert res["config"]["method"]["temperature"] == pytest.approx(t.params["method.temperature"])
    best = max(trials, key=lambda t: t.value)
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["trial", "state"])
    assert lines[head].split() == ["trial", "state", "method.temperature", "optim.lr", "val_knn_acc", "seconds"]
    assert [line.split()[:2] for line in lines[head + 2: head + 5]] == [[str(i), "complete"] for i in range(3)]
    # best.yaml: the recipe, the user's overrides and the best values, without the validation slice
    cfg = load_config(str(out / "best.yaml"))
    assert cfg.method.temperature == pytest.approx(best.params["method.temperature"])
    assert cfg.optim.lr == pytest.approx(best.params["optim.lr"]) and cfg.model.width == 8 and cfg.eval.val_size == 0
    # trained once on the whole training split and tested, as was the recipe's default
    for name, temperature in (("best", best.params["method.temperature"]), ("default", 0.2)):
        res = json.loads((out / name / "results.json").read_text())
        assert res["eval"]["encoders"]["ssl"]["knn"]["accuracy"] > 0.3 and res["train"]["steps"] == 6
        assert yaml.safe_load((out / name / "config.yaml").read_text())["method"]["temperature"] == pytest.approx(temperature)
    spec = json.loads((out / "sweep.json").read_text())
    assert spec["recipe"] == "digits-simclr" and spec["metric"] == "val_knn_acc" and spec["trials"] == 3
    assert spec["results"]["best"]["trial"] == best.number and spec["results"]["counted"] == 3
    assert set(spec["results"]["final"]) == {"default", "best"}
    for name in ("default", "best"):  # the compare row of the run as written: every probe filled in
        figures = spec["results"]["final"][name]["figures"]
        assert figures == compare_figures(json.loads((out / name / "results.json").read_text()))
        assert all(v not in ("-", None) for k, v in figures.items() if k != "collapsed at"), figures
    assert "on the test split:" in text
    html = (out / "sweep.html").read_text()
    assert html.count("data:image/png") >= 3 and "Parameter importances" in html and "Slices" in html


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: Any, trial: Any) -> bool:
        return True


def test_the_pruner_stops_a_trial_after_its_first_validation(tmp_path: Path) -> None:
    plan = make_plan("digits-simclr", ["method.temperature=0.1:0.5"], trials=1, validate_every=2, sets=TINY)
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    trial = study.ask(plan.distributions())
    said: list[str] = []
    assert run_trial(study, trial, plan, tmp_path, said.append) == "PRUNED"
    res = json.loads((tmp_path / "trials" / "trial-0000" / "results.json").read_text())
    assert res["train"]["stopped_by"] == "pruned" and res["train"]["steps"] == 2  # of 6
    frozen = study.trials[0]
    assert frozen.state.name == "PRUNED"
    assert frozen.intermediate_values == {2: pytest.approx(res["validation"]["curve"][0]["value"])}
    assert "pruned at step 2" in said[-1]


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from contrastkit import runner

    train_run, calls = runner.train_run, []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory\n(details)")
        return train_run(*args, **kwargs)

    monkeypatch.setattr(runner, "train_run", flaky)
    out = tmp_path / "sw"
    assert main(["sweep", "digits-simclr", *SPACE, "--trials", "3", "--out", str(out), "--no-final", *sets()]) == 0
    text = capsys.readouterr().out
    states = [(t.state.name, t.user_attrs.get("error")) for t in _study(out).get_trials()]
    assert states == [("COMPLETE", None), ("FAIL", "RuntimeError: out of memory (details)"), ("COMPLETE", None)]
    assert "trial 1: failed: RuntimeError: out of memory (details)" in text
    assert (out / "best.yaml").is_file() and not (out / "best").exists()  # --no-final
