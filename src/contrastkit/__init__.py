"""contrastkit: contrastive self-supervised representation learning in PyTorch.

``contrastkit.train(recipe, overrides=...)`` trains and evaluates a recipe and returns the run;
``contrastkit.load_run(path)`` opens a finished run (encode, search, recommend, evaluate). The
building blocks for your own loop are in ``contrastkit.losses``, ``contrastkit.methods``,
``contrastkit.negatives``, ``contrastkit.augment`` and ``contrastkit.data``.
"""

from __future__ import annotations

from typing import Any

from contrastkit.version import __version__

__all__ = ["Run", "__version__", "load_run", "train"]


def __getattr__(name: str) -> Any:
    """``train``, ``load_run`` and ``Run`` are imported on first use (``import contrastkit`` stays light)."""
    if name in ("train", "load_run", "Run"):
        from contrastkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'contrastkit' has no attribute {name!r}")
