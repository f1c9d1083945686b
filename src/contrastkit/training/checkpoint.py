"""Checkpoints that survive crashes, kills and full disks.

``atomic_save`` writes to a temporary file, flushes it to disk and renames it over the target,
so the target is always either the old file or the complete new one. With ``keep_previous``
the file it replaces stays beside it as ``previous.pt`` (a hard link, so at every moment both
names hold a complete checkpoint). A write that fails (a full disk, a vanished folder) removes
its temporary file, leaves both checkpoints as they were and raises :class:`CheckpointWriteError`.
Loading never runs code (``weights_only=True``); :func:`load_latest_checkpoint` falls back to
``previous.pt`` when ``last.pt`` is truncated or unreadable, with one warning naming both.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from contrastkit.errors import UserError

LAST, PREVIOUS = "last.pt", "previous.pt"


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the previous one is intact."""


def atomic_save(obj: Any, path: Path, *, keep_previous: bool = False) -> None:
    """Write ``obj`` with torch.save so that ``path`` is either the old file or the complete new
    one; with ``keep_previous`` the old file stays as ``previous.pt`` in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if keep_previous and path.is_file():
            _keep_previous(path)
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise CheckpointWriteError(
            exc.errno, f"could not write checkpoint {str(path)!r}: {exc.strerror or exc}; the previous "
            "checkpoint is intact"
        ) from None
    except BaseException:
        _remove(tmp)
        raise


def _keep_previous(path: Path) -> None:
    """``path`` → ``previous.pt`` without a moment where either name is missing (hard link)."""
    previous = path.with_name(PREVIOUS)
    link = path.with_name(f".{PREVIOUS}.link")
    _remove(str(link))
    try:
        os.link(path, link)
        os.replace(link, previous)
    except OSError:  # no hard links on this file system: a rename (a short window without last)
        os.replace(path, previous)


def _remove(name: str) -> None:
    if os.path.exists(name):
        os.unlink(name)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without running any code (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, corrupt or foreign file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"checkpoint {str(path)!r} cannot be read ({reason})") from None
    if not isinstance(data, dict):
        raise UserError(f"checkpoint {str(path)!r} is not a contrastkit checkpoint")
    return data


def load_latest_checkpoint(folder: Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path]:
    """The newest readable checkpoint of a run's ``checkpoints/`` folder and its path: ``last.pt``,
    or ``previous.pt`` (with a one-line warning naming both) when the last one is unreadable."""
    last, previous = Path(folder) / LAST, Path(folder) / PREVIOUS
    try:
        return load_checkpoint(last, map_location), last
    except UserError as problem:
        if not previous.is_file():
            raise
        try:
            state = load_checkpoint(previous, map_location)
        except UserError:
            raise UserError(f"neither {str(last)!r} nor {str(previous)!r} can be read") from None
        reason = str(problem) if last.is_file() else f"{str(last)!r} is missing"
        warnings.warn(f"{reason}; using the previous checkpoint {str(previous)!r}", RuntimeWarning, stacklevel=2)
        return state, previous


def save_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    """Export weights as safetensors (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
    os.replace(tmp, path)
