"""Run folders, handled once for every task: a new folder (never overwriting one without
``--resume``), its ``config.yaml``, its ``results.json`` (written atomically), its checkpoints.
(Reading a run's config needs the task registry: :func:`contrastkit.recipes.read_run_config`.)

Layout common to every task: ``config.yaml``, ``train_log.csv``, ``tensorboard/``,
``checkpoints/last.pt``, ``results.json``; each task adds its own artifacts (see its module).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from contrastkit.config import Config, save_config
from contrastkit.errors import UserError
from contrastkit.training.checkpoint import atomic_save, load_checkpoint, load_latest_checkpoint
from contrastkit.training.distributed import env_world_size

CONFIG_FILE = "config.yaml"
RESULTS_FILE = "results.json"
CHECKPOINTS = "checkpoints"
CHECKPOINT = Path(CHECKPOINTS) / "last.pt"
BEST = Path(CHECKPOINTS) / "best.pt"  # the best validation step's weights, where a run keeps them


def run_dir_for(name: str, out: str | None, resume: bool) -> Path:
    """The folder of a run: ``out``, or runs/<name>-<timestamp>; a one-line error for a folder
    that exists (without ``resume``) or has no checkpoint to continue (with it)."""
    if out is None:
        if resume:
            raise UserError("--resume needs --out RUN_DIR (the folder of the run to continue)")
        return Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    path = Path(out)
    if resume:
        if not any((path / CHECKPOINTS / n).is_file() for n in ("last.pt", "previous.pt")):
            raise UserError(f"--resume: no checkpoint in {str(path)!r} (expected {CHECKPOINT})")
    elif path.exists() and any(path.iterdir()):
        raise UserError(
            f"run folder {str(path)!r} already exists; pass --resume to continue it or choose another --out"
        )
    return path


def new_run_dir(cfg: Config, out: str | None, resume: bool) -> Path:
    """The run folder, made (see :func:`run_dir_for`); under torchrun, every process's."""
    if env_world_size() > 1:  # under torchrun every process must agree on the folder
        if out is None:
            raise UserError("under torchrun pass --out RUN_DIR (every process must write to the same folder)")
        if os.environ.get("RANK", "0") != "0":
            path = Path(out)
            path.mkdir(parents=True, exist_ok=True)
            return path
    path = run_dir_for(cfg.name, out, resume)
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_run_config(cfg: Config, run_dir: Path) -> None:
    save_config(cfg, Path(run_dir) / CONFIG_FILE)


def read_results(run_dir: Path) -> dict[str, Any]:
    """The run's results.json, or a fresh record when there is none yet."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        return {"run_dir": str(run_dir)}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def write_results(run_dir: Path, results: dict[str, Any]) -> Path:
    """results.json, written to a temporary file and renamed (never half-written)."""
    path = Path(run_dir) / RESULTS_FILE
    tmp = path.with_name(f".{RESULTS_FILE}.tmp")
    tmp.write_text(json.dumps(_jsonable(results), indent=2))
    tmp.replace(path)
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj


def load_run_checkpoint(run_dir: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The run's newest readable checkpoint (last.pt, else previous.pt with a warning); a
    one-line error when it has none."""
    folder = Path(run_dir) / CHECKPOINTS
    if not any((folder / name).is_file() for name in ("last.pt", "previous.pt")):
        raise UserError(f"{str(run_dir)!r} has no checkpoint yet ({CHECKPOINT}); train it first")
    state, _ = load_latest_checkpoint(folder, map_location)
    return state


def checkpoint_part(state: dict[str, Any], key: str = "model") -> Any:
    """A part of what the training step saved (``model``, ``optimizer``, ``policy``, ...), from a
    checkpoint of this contrastkit or an older one (which kept the step's state at the top)."""
    inner = state.get("state")
    if isinstance(inner, dict) and key in inner:
        return inner[key]
    if key in state:
        return state[key]
    raise UserError(f"this checkpoint has no {key!r} (it holds: {', '.join(sorted(inner or state))})")


def load_run_weights(run_dir: Path, map_location: str | torch.device = "cpu", key: str = "model") -> dict[str, Any]:
    """The trained weights (``key`` of the step's state) of the run's newest readable checkpoint."""
    part: dict[str, Any] = checkpoint_part(load_run_checkpoint(run_dir, map_location), key)
    return part


def keep_best_weights(model: nn.Module, run_dir: Path, metric: str, **record: Any) -> Callable[[int, float], None]:
    """A :class:`~contrastkit.training.callbacks.Validation`'s ``keep``: at each new best, the
    model's weights with the step, the metric and its value (and ``record``), written atomically
    to the run's checkpoints/best.pt; :func:`load_model_weights` reads them back."""

    def keep(step: int, value: float) -> None:
        atomic_save({"model": model.state_dict(), "step": step, "metric": metric, "value": value, **record},
                    Path(run_dir) / BEST)

    return keep


def load_model_weights(run_dir: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The run's model: the best validation step's weights (checkpoints/best.pt) where the run
    kept them, else those of its newest checkpoint."""
    best = Path(run_dir) / BEST
    if best.is_file():
        return dict(load_checkpoint(best, map_location=map_location)["model"])
    return load_run_weights(run_dir, map_location)
