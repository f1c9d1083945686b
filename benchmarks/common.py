"""What the benchmark scripts share: their command lines, contenders timed in child processes in
interleaved rounds and the table of their medians, contrastkit training runs with a callback
after every step, and the recommendation benchmarks' rows, RecBole anchor and table.

Only the standard library is imported here at module level, so that the anchors running in other
environments (sentence-transformers, RecBole) can import it too; contrastkit and torch are imported
where they are used. A script imports it as ``from common import ...`` (its own folder is on
``sys.path`` when it runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SHARED_DATA = HERE.parents[1] / "shared" / "data"
# OpenMP threads that spin while waiting take the core their partner needs on a shared, loaded
# machine (each parallel op then costs a scheduler tick, ~16 ms): every timed process runs with this
ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


# ----------------------------------------------------------------------------- command lines


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser whose help is the script's docstring, as written."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_numbers(ap: argparse.ArgumentParser, **defaults: int | float) -> None:
    """``--name`` options (underscores become dashes) of the type of their default."""
    for name, default in defaults.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)


def add_overrides(ap: argparse.ArgumentParser, what: str = "our recipe", dest: str = "set") -> None:
    """A repeatable ``--set KEY=VALUE`` (recipe overrides) into ``args.<dest>``."""
    ap.add_argument("--set", dest=dest, action="append", default=[], help=f"override for {what} (repeatable)")


def add_contenders(ap: argparse.ArgumentParser, contenders: tuple[str, ...]) -> None:
    """``--contenders`` (which to run, in this order) and the hidden ``--child`` (run one, in this process)."""
    ap.add_argument("--contenders", nargs="+", default=list(contenders), choices=contenders)
    ap.add_argument("--child", choices=contenders, help=argparse.SUPPRESS)


def set_args(overrides: list[str]) -> list[str]:
    """``--set`` arguments of a command line."""
    return [x for o in overrides for x in ("--set", o)]


# ----------------------------------------------------------------------------- contenders in rounds


def child_value(cmd: list[str], name: str, key: str) -> float:
    """Run a contender's child process (with :data:`ENV`); its last stdout line is a JSON object
    holding ``key``."""
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ENV}, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])[key])


def interleaved(names: list[str], rounds: int, measure: Callable[[str], float], unit: str) -> dict[str, list[float]]:
    """``measure(name)`` for every name in turn, ``rounds`` times (A B C A B C ...: the machine is
    shared, so each sees the same load); the values of each name, in order."""
    results: dict[str, list[float]] = {name: [] for name in names}
    for rnd in range(rounds):
        for name in names:
            value = measure(name)
            results[name].append(value)
            print(f"round {rnd + 1} {name}: {value:.1f} {unit}", flush=True)
    return results


def medians(results: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in results.items()}


def ratio_table(results: dict[str, list[float]], unit: str, against: list[tuple[str, str]]) -> str:
    """Markdown: per contender its median, its rounds, and its median against each of ``against``
    (``(name, "x")``: a ratio; ``(name, "%")``: a percentage), "–" where that one did not run."""
    med = medians(results)
    lines = [
        f"| run | {unit} (median) | rounds | " + " | ".join(f"vs {name}" for name, _ in against) + " |",
        "|---" * (3 + len(against)) + "|",
    ]
    for name, values in results.items():
        cells = []
        for ref, how in against:
            if ref not in med:
                cells.append("–")
            elif how == "%":
                cells.append(f"{100 * med[name] / med[ref]:.0f} %")
            else:
                cells.append(f"{med[name] / med[ref]:.2f}×")
        lines.append(f"| {name} | {med[name]:.0f} | {', '.join(f'{v:.0f}' for v in values)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def timed_loop(loader: Iterable[Any], step: Callable[[Any], None], warmup: int, steps: int) -> float:
    """Seconds of steps warmup + 1 .. warmup + steps of ``step(batch)`` over the batches of
    ``loader`` (passed over again as often as needed): an anchor's own training loop, timed as
    :func:`timed_steps` times ours."""
    done, start = 0, time.perf_counter()
    while True:
        for batch in loader:
            step(batch)
            done += 1
            if done == warmup:
                start = time.perf_counter()
            if done == warmup + steps:
                return time.perf_counter() - start


# ----------------------------------------------------------------------------- contrastkit runs


def each_step(fn: Callable[[int], None]) -> Any:
    """A training callback calling ``fn(step)`` after every step."""
    from contrastkit.training import Callback

    class EachStep(Callback):
        def on_step(self, trainer: Any, logs: dict[str, float] | None) -> None:
            fn(trainer.step)

    return EachStep()


def timed_steps(cfg: Any, warmup: int, steps: int) -> float:
    """Seconds of steps warmup + 1 .. warmup + steps of a contrastkit training run of ``cfg``
    (``train.max_steps`` = warmup + steps), in a temporary run folder."""
    import tempfile

    from contrastkit.runner import train_run

    marks: dict[int, float] = {}

    def mark(step: int) -> None:
        if step in (warmup, warmup + steps):
            marks[step] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        train_run(cfg, Path(tmp), progress=False, callbacks=[each_step(mark)], verbose=False)
    return marks[warmup + steps] - marks[warmup]


def task_training(cfg: Any, run_dir: Path) -> Any:
    """The task's :class:`~contrastkit.training.Training` of ``cfg`` (its step object: model and
    optimiser; its batches), on the configured device, as the loop would run it."""
    from contrastkit.tasks import RunContext, get_task
    from contrastkit.training import setup_runtime

    device = setup_runtime(cfg.train)
    return get_task(cfg.task)(cfg).training(RunContext(cfg, Path(run_dir), device, verbose=False))


def run_recipe(recipe: str, overrides: list[str], out: Path) -> tuple[dict[str, Any], Path, float]:
    """Train and evaluate a recipe in a new run folder at ``out``: (results, run folder, seconds)."""
    from contrastkit.recipes import load_config
    from contrastkit.runner import run_all
    from contrastkit.runs import new_run_dir

    cfg = load_config(recipe, [*overrides, "train.progress=false"])
    run_dir = new_run_dir(cfg, str(out), resume=False)
    t0 = time.perf_counter()
    results = run_all(cfg, run_dir, progress=False, verbose=False)
    return results, run_dir, time.perf_counter() - t0


# ----------------------------------------------------------------------------- recommendation


def ranking_row(model: str, res: dict[str, Any], run_dir: Path, wall: float) -> dict[str, Any]:
    """The table row of a contrastkit recommender run (results.json ``res``)."""
    test, es = res["eval"]["test"], res["early_stopping"]
    return {
        "library": "contrastkit", "model": model, "valid_ndcg@20": es["best"],
        "recall@20": test[model]["recall@20"], "ndcg@20": test[model]["ndcg@20"],
        "seconds_per_epoch": es["seconds_per_epoch"], "epochs": res["train"]["epochs_done"],
        "best_epoch": es["best_epoch"], "seconds_to_best": es["seconds_to_best"],
        "validation_seconds": es["validation_seconds"], "seconds_total": wall,
        "popularity": test["popularity"], "run_dir": str(run_dir),
    }


def run_recbole(python: str, data_dir: Path, name: str, model: str, params: dict[str, Any],
                out: Path, threads: int, metrics: tuple[str, ...] = ()) -> dict[str, Any]:
    """One RecBole model through benchmarks/recbole_anchor.py in RecBole's environment: a table row."""
    result_file = out / f"recbole-{model}.json"
    python = str(Path(python).absolute()) if Path(python).exists() else python  # it runs in `out`
    cmd = [python, str(HERE / "recbole_anchor.py"), "--data-dir", str(data_dir), "--dataset", name,
           "--model", model, "--params", json.dumps(params), "--threads", str(threads), "--out", str(result_file),
           *(["--metrics", *metrics] if metrics else [])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out)
    wall = time.perf_counter() - t0
    (out / f"recbole-{model}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"library": "RecBole 1.2.1", "model": model, "error": tail[0]}
    res = json.loads(result_file.read_text())
    return {
        "library": "RecBole 1.2.1", "model": model, "valid_ndcg@20": res["valid"].get("ndcg@20"),
        "recall@20": res["test"].get("recall@20"), "ndcg@20": res["test"].get("ndcg@20"),
        "seconds_per_epoch": res["seconds_per_epoch"], "epochs": res["epochs"], "best_epoch": res.get("best_epoch"),
        "seconds_to_best": res.get("seconds_to_best"), "validation_seconds": res.get("validation_seconds"),
        "seconds_total": wall, "users": res["users"], "items": res["items"],
    }


def recbole_params(cfg: Any, **extra: Any) -> dict[str, Any]:
    """RecBole's settings for a recipe's recommender: the same embedding size, batch, learning
    rate, L2 term (``require_pow``: reg · Σ‖e‖² / (2B), as ours), epochs, validation interval,
    patience and seed; ``extra`` replaces any of them."""
    r, m = cfg.recsys, cfg.method
    return {
        "embedding_size": m.embedding_dim, "learning_rate": cfg.optim.lr, "train_batch_size": cfg.train.batch_size,
        "eval_batch_size": 4096, "epochs": cfg.train.epochs, "eval_step": r.eval_every, "stopping_step": r.patience,
        "reg_weight": m.reg, "require_pow": True, "seed": cfg.train.seed, **extra,
    }


def ranking_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per recommender run (ours or RecBole's)."""

    def f(v: Any, spec: str) -> str:
        return "–" if v is None else format(v, spec)

    lines = [
        "| library | model | valid NDCG@20 | test Recall@20 | test NDCG@20 | s/epoch | epochs (best) | s to best | s total |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['library']} | {r['model']} | failed: {r['error']} | | | | | | |")
            continue
        best = f" ({r['best_epoch']})" if r.get("best_epoch") else ""
        lines.append(
            f"| {r['library']} | {r['model']} | {f(r.get('valid_ndcg@20'), '.4f')} | {f(r['recall@20'], '.4f')} | "
            f"{f(r['ndcg@20'], '.4f')} | {f(r.get('seconds_per_epoch'), '.2f')} | {f(r.get('epochs'), '.0f')}{best} | "
            f"{f(r.get('seconds_to_best'), '.0f')} | {f(r.get('seconds_total'), '.0f')} |"
        )
    return "\n".join(lines)


def versions() -> str:
    """torch and Python versions, for the line under a table."""
    import torch

    return f"torch {torch.__version__}, python {sys.version.split()[0]}"
