"""The Python face of contrastkit: train a recipe, open a finished run. The command line is a
thin layer over these."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contrastkit.errors import UserError
from contrastkit.recipes import apply_overrides, load_config, read_run_config
from contrastkit.runner import load_run, open_run, run_all
from contrastkit.runs import CONFIG_FILE, new_run_dir
from contrastkit.tasks import TrainedRun

__all__ = ["load_run", "train"]


def train(
    recipe: str | None = None,
    *,
    overrides: dict[str, Any] | list[str] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    evaluate: bool = True,
    progress: bool = True,
) -> TrainedRun:
    """Train a recipe (a shipped name, a YAML path, or None: SimCLR on the digits) with
    ``overrides`` (``{"train.epochs": 3}`` or ``["train.epochs=3"]``) into the run folder ``out``
    (default runs/NAME-TIMESTAMP), evaluate it (``evaluate``), and return the run.
    ``resume=True`` continues the run in ``out`` from its last checkpoint."""
    if resume and out is not None and (Path(out) / CONFIG_FILE).is_file():
        if recipe is not None:
            raise UserError("resume continues the run's own recipe; leave recipe out")
        cfg = apply_overrides(read_run_config(Path(out)), overrides)
    else:
        cfg = load_config(recipe, overrides)
    if not evaluate:
        cfg.eval.enabled = False
    run_dir = new_run_dir(cfg, None if out is None else str(out), resume)
    run_all(cfg, run_dir, resume=resume, progress=progress)
    return open_run(cfg, run_dir)
