"""Files an export writes: each appears whole or not at all (a temporary file beside it, flushed
to disk, then renamed over it), so that a failed or interrupted export leaves no half file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(out: Path) -> Iterator[Path]:
    """A temporary path beside ``out`` (with the same suffix) for the block to write; renamed over
    ``out`` when the block ends without an error, removed when it raises."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=f".tmp{out.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(out: Path, text: str) -> None:
    """``text`` (UTF-8) into ``out``, whole or not at all."""
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
