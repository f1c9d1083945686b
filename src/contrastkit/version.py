"""The installed contrastkit's version (from the package metadata: pyproject.toml is its one source)."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("contrastkit")
except metadata.PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"
