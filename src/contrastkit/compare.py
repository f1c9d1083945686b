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

from contrastkit.config import load_config
from contrastkit.errors import UserError

COLUMNS = ("recipe", "method", "kNN", "linear", "10/class", "train s", "steps", "peak MB", "eff. rank")


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
    other = sorted({c.task for c in cfgs} - {"image"})
    if other:
        raise UserError(f"compare works on image recipes; got task {', '.join(other)}")
    data = {(c.data.name, c.data.root) for c in cfgs}
    if len(data) > 1:
        listed = ", ".join(f"{r}: {c.data.name}" for r, c in zip(recipes, cfgs, strict=True))
        raise UserError(f"compare needs recipes on the same data; got {listed} (or pass --set data.name=...)")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"output folder {str(out)!r} already exists and is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    names = _unique_names(recipes)
    common = [
        f"train.time_budget_minutes={budget_minutes}",
        "train.epochs=100000",
        f"eval.few_label_shots=[{shots}]",
        "eval.finetune=false",
        "eval.plots=false",
        *overrides,
    ]
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
        row = _row(recipe, run_dir, proc.returncode, time.perf_counter() - t0, shots)
        rows.append(row)
        if proc.returncode != 0:
            print(f"  {recipe} failed (exit {proc.returncode}); see {run_dir.parent / f'{name}.log'}", flush=True)
    (out / "compare.json").write_text(json.dumps({"budget_minutes": budget_minutes, "runs": rows}, indent=2))
    return rows


def _unique_names(recipes: list[str]) -> list[str]:
    names: list[str] = []
    for r in recipes:
        base = Path(r).stem if r.endswith((".yaml", ".yml")) else r
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


def _row(recipe: str, run_dir: Path, code: int, wall: float, shots: int) -> dict[str, Any]:
    row: dict[str, Any] = {"recipe": recipe, "run_dir": str(run_dir), "exit_code": code, "wall_seconds": wall}
    path = run_dir / "results.json"
    if not path.is_file():
        return row
    res = json.loads(path.read_text())
    tr, ev = res.get("train", {}), res.get("eval", {})
    ssl = ev.get("encoders", {}).get("ssl", {})
    few = ssl.get("few_label", {}).get("shots", {}).get(str(shots), {}) or {}
    row.update(
        method=res.get("config", {}).get("method", {}).get("name"),
        knn=ssl.get("knn", {}).get("accuracy"),
        linear=ssl.get("linear_probe", {}).get("accuracy"),
        few_label=few.get("mean"),
        few_label_std=few.get("std"),
        train_seconds=tr.get("seconds"),
        steps=tr.get("steps"),
        peak_memory_mb=tr.get("peak_memory_mb"),
        effective_rank=ev.get("diagnostics", {}).get("eff_rank"),
        collapsed_at_step=tr.get("collapsed_at_step"),
    )
    return row


def compare_table(rows: list[dict[str, Any]], shots: int = 10) -> str:
    """Fixed-width table of a comparison (accuracies in %)."""

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    def num(v: float | None, fmt: str = "{:.0f}") -> str:
        return "-" if v is None else fmt.format(v)

    header = [c if c != "10/class" else f"{shots}/class" for c in COLUMNS]
    body = []
    for r in rows:
        few = pct(r.get("few_label"))
        if r.get("few_label_std") is not None:
            few += f"±{100 * r['few_label_std']:.1f}"
        body.append([
            r["recipe"] + (" (failed)" if r.get("exit_code") else "") + (" (collapsed)" if r.get("collapsed_at_step") else ""),
            str(r.get("method") or "-"),
            pct(r.get("knn")),
            pct(r.get("linear")),
            few,
            num(r.get("train_seconds")),
            num(r.get("steps")),
            num(r.get("peak_memory_mb")),
            num(r.get("effective_rank"), "{:.1f}"),
        ])
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=False)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=False)))

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in body)])
