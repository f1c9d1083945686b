"""Run folders, handled once for every task: a new folder (never overwriting one without
``--resume``), its ``config.yaml``, its ``results.json`` (written atomically), its checkpoints.

Layout common to every task: ``config.yaml``, ``train_log.csv``, ``tensorboard/``,
``checkpoints/last.pt``, ``results.json``; each task adds its own artifacts (see its module).
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from contrastkit.errors import UserError

if TYPE_CHECKING:
    from contrastkit.config import Config

CONFIG_FILE = "config.yaml"
RESULTS_FILE = "results.json"
CHECKPOINTS = "checkpoints"
CHECKPOINT = Path(CHECKPOINTS) / "last.pt"


def new_run_dir(cfg: Config, out: str | None, resume: bool) -> Path:
    """The run folder: --out, or runs/<name>-<timestamp>; refuses to overwrite without --resume."""
    from contrastkit.train.distributed import env_world_size

    if env_world_size() > 1:  # under torchrun every process must agree on the folder
        if out is None:
            raise UserError("under torchrun pass --out RUN_DIR (every process must write to the same folder)")
        if os.environ.get("RANK", "0") != "0":
            path = Path(out)
            path.mkdir(parents=True, exist_ok=True)
            return path
    if out is None:
        if resume:
            raise UserError("--resume needs --out RUN_DIR (the folder of the run to continue)")
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{cfg.name}-{stamp}"
    else:
        path = Path(out)
    if resume:
        if not any((path / CHECKPOINTS / name).is_file() for name in ("last.pt", "previous.pt")):
            raise UserError(f"--resume: no checkpoint in {str(path)!r} (expected {CHECKPOINT})")
    elif path.exists() and any(path.iterdir()):
        raise UserError(
            f"run folder {str(path)!r} already exists; pass --resume to continue it or choose another --out"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_run_config(run_dir: Path) -> Config:
    """The config a run was trained with (an older contrastkit's config.yaml is migrated)."""
    from contrastkit.config import config_from_dict

    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} is not a contrastkit run folder (no {CONFIG_FILE})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise UserError(f"{str(path)!r} is not valid YAML; was the run folder edited?") from None
    return config_from_dict(data, saved=True)


def save_run_config(cfg: Config, run_dir: Path) -> None:
    from contrastkit.config import save_config

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
    from contrastkit.train.checkpoint import load_latest_checkpoint

    folder = Path(run_dir) / CHECKPOINTS
    if not any((folder / name).is_file() for name in ("last.pt", "previous.pt")):
        raise UserError(f"{str(run_dir)!r} has no checkpoint yet ({CHECKPOINT}); train it first")
    state, _ = load_latest_checkpoint(folder, map_location)
    return state
