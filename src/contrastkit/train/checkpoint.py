"""Atomic, code-free checkpoints: torch.save to a temp file then rename; load with weights_only."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from contrastkit.errors import UserError


def atomic_save(obj: Any, path: Path) -> None:
    """Write `obj` with torch.save so that `path` is either the old file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without running any code (weights_only=True)."""
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise UserError(f"checkpoint {str(path)!r} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"checkpoint {str(path)!r} is not a contrastkit checkpoint")
    return data


def save_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    """Export weights as safetensors (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
    os.replace(tmp, path)
