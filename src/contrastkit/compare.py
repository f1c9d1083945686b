"""Train several recipes on the same data for the same time budget and compare them.

Each recipe runs in its own process (`python -m contrastkit train`), so its peak memory and
time are its own; the results go to one table and `compare.json` in the output folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from contrastkit.errors import UserError
from contrastkit.evaluate.tables import format_table
from contrastkit.recipes import load_config
from contrastkit.runner import open_run
from contrastkit.tasks import Task, TrainedRun, all_tasks, get_task


def compare(
    recipes: list[str],
    *,
    budget_minutes: float,
    out: Path,
    overrides: list[str] | None = None,
    shots: int = 10,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Train and evaluate each recipe with ``train.time_budget_minutes = budget_minutes``."""
    if len(recipes) < 1:
        raise UserError("compare needs at least one recipe")
    if not budget_minutes > 0:
        raise UserError(f"--budget-minutes must be > 0, got {budget_minutes}")
    overrides = list(overrides or [])
    cfgs = [load_config(r, overrides) for r in recipes]  # validates every recipe first
    tasks = sorted({c.task for c in cfgs})
    if len(tasks) > 1:
        listed = ", ".join(f"{r}: {c.task}" for r, c in zip(recipes, cfgs, strict=True))
        raise UserError(f"compare needs recipes of one task; got {listed}")
    task = get_task(tasks[0])
    if not _offers_compare(task):
        able = ", ".join(t.name for t in all_tasks() if _offers_compare(t))
        raise UserError(f"compare works on recipes of task {able}; got task {task.name}")
    data = {(c.data.name, c.data.root) for c in cfgs} if "data" in cfgs[0].sections else set()
    if len(data) > 1:
        listed = ", ".join(f"{r}: {c.data.name}" for r, c in zip(recipes, cfgs, strict=True))
        raise UserError(f"compare needs recipes on the same data; got {listed} (or pass --set data.name=...)")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"output folder {str(out)!r} already exists and is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    names = _unique_names(recipes)
    common = [f"train.time_budget_minutes={budget_minutes}"]
    if "epochs" not in task.unread.get("train", ()):  # long enough to fill the budget
        common.append("train.epochs=100000")
    if hasattr(cfgs[0].eval, "few_label_shots"):  # the probes the table shows
        common += [f"eval.few_label_shots=[{shots}]", "eval.finetune=false", "eval.plots=false"]
    common += overrides
    rows: list[dict[str, Any]] = []
    for recipe, name in zip(recipes, names, strict=True):
        run_dir = out / name
        cmd = [sys.executable, "-m", "contrastkit", "train", recipe, "--out", str(run_dir)]
        if not progress:
            cmd.append("--quiet")
        for o in common:
            cmd += ["--set", o]
        print(f"[{len(rows) + 1}/{len(recipes)}] {recipe}: training for {budget_minutes:g} min", flush=True)
        t0 = time.perf_counter()
        log = (run_dir.parent / f"{name}.log").open("w")
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(), check=False)
        log.close()
        row = _row(recipe, run_dir, proc.returncode, time.perf_counter() - t0, cfgs[len(rows)])
        rows.append(row)
        if proc.returncode != 0:
            print(f"  {recipe} failed (exit {proc.returncode}); see {run_dir.parent / f'{name}.log'}", flush=True)
    (out / "compare.json").write_text(
        json.dumps({"task": task.name, "budget_minutes": budget_minutes, "runs": rows}, indent=2)
    )
    return rows


def _offers_compare(task: type[Task]) -> bool:
    return any(run.compare_row is not TrainedRun.compare_row for run in task.runs)


def _unique_names(recipes: list[str]) -> list[str]:
    names: list[str] = []
    for r in recipes:
        base = Path(r).stem if r.endswith((".yaml", ".yml")) else r
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


def _row(recipe: str, run_dir: Path, code: int, wall: float, cfg: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"recipe": recipe, "run_dir": str(run_dir), "exit_code": code, "wall_seconds": wall}
    path = run_dir / "results.json"
    if not path.is_file():
        return row
    res = json.loads(path.read_text())
    tr = res.get("train", {})
    row.update(
        method=res.get("config", {}).get("method", {}).get("name"),
        figures=open_run(cfg, run_dir).compare_row(res),
        train_seconds=tr.get("seconds"),
        steps=tr.get("steps"),
        peak_memory_mb=tr.get("peak_memory_mb"),
    )
    return row


def compare_table(rows: list[dict[str, Any]]) -> str:
    """Fixed-width table of a comparison: recipe, method, the figures of each run's
    ``compare_row`` (for images: accuracies in %), time, steps and peak memory."""
    return _figures_table(rows)


COMMON = ("recipe", "method", "train s", "steps", "peak MB")  # columns every comparison shows


def _figures_table(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r.get("figures", {}) if c not in (*columns, *COMMON)]

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    header = [*COMMON[:2], *columns, *COMMON[2:]]
    body = [
        [
            r["recipe"] + (" (failed)" if r.get("exit_code") else ""),
            str(r.get("method") or "-"),
            *(cell(r.get("figures", {}).get(c)) for c in columns),
            *(cell(None if r.get(k) is None else round(r[k])) for k in ("train_seconds", "steps", "peak_memory_mb")),
        ]
        for r in rows
    ]
    return format_table(header, body, left=2)
