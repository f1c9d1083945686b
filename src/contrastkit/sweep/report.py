"""The end of a sweep: the trials table, the best trial's configuration as a recipe
(``DIR/best.yaml``), that recipe and the recipe's default each trained once on the whole training
split and tested once (``DIR/best/``, ``DIR/default/``), sweep.json's results and the report
``DIR/sweep.html`` (Optuna's matplotlib figures inlined as PNG)."""

from __future__ import annotations

import io
import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from contrastkit.config import parse_overrides
from contrastkit.errors import UserError
from contrastkit.evaluate.tables import format_table
from contrastkit.recipes import config_from_dict, load_config, read_recipe, with_overrides
from contrastkit.runs import CHECKPOINTS, CONFIG_FILE, RESULTS_FILE
from contrastkit.sweep.plan import Plan, write_plan
from contrastkit.sweep.study import Say, counts, describe_params

BEST_RECIPE, REPORT = "best.yaml", "sweep.html"


def trial_rows(study: Any, plan: Plan) -> list[dict[str, Any]]:
    """Every trial of the study: number, state (interrupted and surplus ones named so), values,
    the figure, seconds, run folder, why it failed."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        reason = t.user_attrs.get("reason")
        rows.append({
            "trial": t.number,
            "state": reason if t.state.name == "FAIL" and reason else t.state.name.lower(),
            "counted": counts(t),
            "params": dict(t.params),
            "value": t.value if t.state.name == "COMPLETE" else None,
            "last_value": t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None,
            "steps_reported": sorted(t.intermediate_values),
            "seconds": t.duration.total_seconds() if t.duration is not None else None,
            "run_dir": t.user_attrs.get("run_dir"),
            "error": t.user_attrs.get("error"),
            "resumed_from": t.user_attrs.get("resumed_from"),
        })
    return rows


def trials_table(rows: list[dict[str, Any]], plan: Plan) -> str:
    keys = [p.key for p in plan.params()]

    def cell(v: Any) -> str:
        return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    body = []
    for r in rows:
        if r["state"] == "surplus":
            continue
        value = r["value"] if r["value"] is not None else r["last_value"] if r["state"] == "pruned" else None
        body.append([str(r["trial"]), r["state"], *(cell(r["params"].get(k)) for k in keys), cell(value),
                     cell(None if r["seconds"] is None else round(r["seconds"], 1))])
    return format_table(["trial", "state", *keys, plan.metric, "seconds"], body, left=2 + len(keys))


def best_recipe(plan: Plan, values: dict[str, Any], header: str) -> str:
    """The recipe with the user's overrides, the budget and ``values``, without the sweep's
    validation settings: what ``contrastkit train best.yaml`` trains."""
    data = with_overrides(read_recipe(plan.recipe), parse_overrides(plan.final_overrides(values)))
    config_from_dict(dict(data))  # a recipe that loads
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return "".join(f"# {line}\n" for line in header.splitlines()) + body


def _final_run(cfg: Any, run_dir: Path, say: Say, what: str) -> dict[str, Any]:
    """Train and test ``cfg`` in ``run_dir`` once: a finished run with the same config is kept, an
    interrupted one continues, another config's run is replaced."""
    from contrastkit.runner import run_all

    results_path, config_path = run_dir / RESULTS_FILE, run_dir / CONFIG_FILE
    same = config_path.is_file() and yaml.safe_load(config_path.read_text()) == yaml.safe_load(
        yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    if same and results_path.is_file():
        results = json.loads(results_path.read_text())
        if "eval" in results or not cfg.eval.enabled:
            say(f"{what}: kept {run_dir} (trained and tested before)")
            return dict(results)
    resume = same and any((run_dir / CHECKPOINTS / n).is_file() for n in ("last.pt", "previous.pt"))
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    say(f"{what}: training and testing {run_dir}" + (" (continued)" if resume else ""))
    run_all(cfg, run_dir, resume=resume, progress=False, verbose=False)
    return dict(json.loads(results_path.read_text()))  # as written (what compare_row reads: JSON's string keys)


def _figures(cfg: Any, run_dir: Path, results: dict[str, Any]) -> dict[str, Any]:
    from contrastkit.runner import open_run

    try:
        return dict(open_run(cfg, run_dir).compare_row(results))
    except Exception:  # a task without a comparison row: its results stay in the run folder
        return {}


def finish(study: Any, plan: Plan, out: Path, spec: dict[str, Any], *, final: bool, say: Say) -> dict[str, Any]:
    """The end of a finished sweep (the launcher's): table, best.yaml, the final runs,
    sweep.json's results and sweep.html; returns the results."""
    rows = trial_rows(study, plan)
    say("")
    say(trials_table(rows, plan))
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        words = (("pruned", "pruned"), ("fail", "failed"))
        states = ", ".join(f"{n} {word}" for s, word in words if (n := sum(r["state"] == s for r in rows)))
        raise UserError(f"no trial of the sweep completed ({states}); nothing to choose (see the table above)")
    best = study.best_trial
    header = (f"the best of {len(rows)} trials of the sweep {out} (trial {best.number}: {plan.metric} {best.value:.4g} "
              "on validation)\ntrain it: contrastkit train " + str(out / BEST_RECIPE))
    best_path = out / BEST_RECIPE
    best_path.write_text(best_recipe(plan, dict(best.params), header))
    say(f"\nbest: trial {best.number}, {plan.metric} {best.value:.4g} on validation: {describe_params(best.params)}")
    say(f"recipe: {best_path}")
    results: dict[str, Any] = {
        "trials": rows,
        "best": {"trial": best.number, "params": dict(best.params), "value": best.value,
                 "run_dir": best.user_attrs.get("run_dir"), "recipe": str(best_path)},
        "counted": sum(r["counted"] for r in rows),
    }
    if final:
        finals: dict[str, Any] = {}
        for name, cfg in (("default", load_config(plan.recipe, plan.final_overrides({}))),
                          ("best", load_config(str(best_path)))):
            run_dir = out / name
            res = _final_run(cfg, run_dir, say, f"{name} configuration")
            finals[name] = {"run_dir": str(run_dir), "figures": _figures(cfg, run_dir, res),
                            "validation_value": (res.get("validation") or {}).get("value"),
                            "train_seconds": res.get("train", {}).get("seconds")}
        results["final"] = finals
        say("")
        say(final_table(finals))
    write_plan(out, plan, {"results": results})
    path = write_html(study, plan, out, results)
    say(f"\nreport: {path}\nresults: {out / 'sweep.json'}")
    return results


def final_table(finals: dict[str, Any]) -> str:
    columns: list[str] = []
    for f in finals.values():
        columns += [c for c in f["figures"] if c not in columns]

    def cell(v: Any) -> str:
        return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    body = [[name, *(cell(f["figures"].get(c)) for c in columns), cell(f["train_seconds"] and round(f["train_seconds"]))]
            for name, f in finals.items()]
    return "on the test split:\n" + format_table(["configuration", *columns, "train s"], body, left=1)


# ----------------------------------------------------------------------------- sweep.html


def _png(plot: Any) -> bytes | None:
    """A figure of Optuna's matplotlib visualisations as PNG (None when it cannot be drawn)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            axes = plot()
            fig = np.ravel(axes)[0].figure
            fig.set_size_inches(max(6.0, 3.2 * len(np.ravel(axes))), 4.0)
            fig.tight_layout()
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=90)
            plt.close(fig)
            return buffer.getvalue()
    except Exception:  # e.g. too few trials to draw
        plt.close("all")
        return None


def write_html(study: Any, plan: Plan, out: Path, results: dict[str, Any]) -> Path:
    from optuna.visualization import matplotlib as vis

    from contrastkit.report.figures import data_uri
    from contrastkit.report.html import esc, page, render, table

    keys = [p.key for p in plan.params()]
    rows = [[r["trial"], r["state"], *(r["params"].get(k) for k in keys), r["value"] if r["value"] is not None
             else r["last_value"], r["seconds"], r["error"] or ""] for r in results["trials"] if r["state"] != "surplus"]
    parts = [
        f"<h1>Sweep {esc(out.name)}</h1>",
        f"<p>recipe <code>{esc(plan.recipe)}</code>, task {esc(plan.task)}; {plan.trials} trials chosen on "
        f"<b>{esc(plan.metric)}</b> ({'higher' if plan.direction == 'max' else 'lower'} is better) on validation data, "
        f"never on the test split; sampler {esc(plan.sampler)}, pruner {esc(plan.pruner)}"
        + (f", {plan.budget_minutes:g} min per trial" if plan.budget_minutes else "") + "</p>",
        "<h2>Space</h2>", render({p.key: p.spec for p in plan.params()}),
        "<h2>Trials</h2>", table(["trial", "state", *keys, plan.metric, "seconds", "error"], rows),
        "<h2>Best</h2>", render(results["best"]),
    ]
    if "final" in results:
        finals = results["final"]
        columns = list(dict.fromkeys(c for f in finals.values() for c in f["figures"]))
        parts += ["<h2>Chosen configuration against the default, on the test split</h2>",
                  table(["configuration", *columns, "train s"],
                        [[name, *(f["figures"].get(c) for c in columns), f["train_seconds"]] for name, f in finals.items()])]
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    figures: list[tuple[str, Callable[[], Any]]] = [("Optimisation history", lambda: vis.plot_optimization_history(study))]
    if len(complete) >= 2 and len(keys) >= 2:
        figures.append(("Parameter importances", lambda: vis.plot_param_importances(study)))
    if complete:
        figures.append(("Slices", lambda: vis.plot_slice(study)))
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        figures.append(("Intermediate values", lambda: vis.plot_intermediate_values(study)))
    for title, plot in figures:
        png = _png(plot)
        if png is not None:
            parts += [f"<h2>{esc(title)}</h2>", f'<img alt="{esc(title)}" src="{data_uri(png)}">']
    path = out / REPORT
    path.write_text(page(f"sweep {out.name}", "\n".join(parts)))
    return path
