"""A tiny MovieLens-format data set written into a test's folder, and overrides that train on it
in a few seconds (tests of the recommendation and item2vec tasks, serve, export, report)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_tiny_movielens(folder: Path, n_users: int = 40, n_items: int = 30, seed: int = 0) -> Path:
    """u.data + u.item in GroupLens format: two taste groups (even / odd items), ratings 1-5."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for u in range(1, n_users + 1):
        liked = np.arange(1 + (u % 2), n_items + 1, 2)
        for j, i in enumerate(rng.choice(liked, 9, replace=False)):
            lines.append(f"{u}\t{i}\t{int(rng.integers(4, 6))}\t{1000 + 10 * u + j}")
        lines.append(f"{u}\t{2 - (u % 2)}\t1\t{900 + u}")  # one disliked item of the other group
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    (folder / "u.item").write_text(
        "".join(f"{i}|Movie {i} ({1990 + i})|01-Jan-1995||http://x|0\n" for i in range(1, n_items + 1))
    )
    return folder


def tiny_recsys_overrides(root: Path, **extra: object) -> list[str]:
    """KEY=VALUE overrides of a recsys recipe for the data of :func:`write_tiny_movielens` in
    ``root``: 16-d embeddings, validation every epoch, no early stop, 6 epochs of 5 steps."""
    base: dict[str, object] = {
        "recsys.root": str(root),
        "method.embedding_dim": 16,
        "recsys.eval_ks": "[5, 10, 20]",
        "recsys.valid_metric": "ndcg@10",
        "recsys.patience": 50,
        "recsys.eval_every": 1,
        "train.batch_size": 64,
        "train.epochs": 6,
        "train.progress": False,
        "optim.lr": 0.02,
    }
    base.update(extra)
    return [f"{key}={value}" for key, value in base.items()]


def tiny_sets(root: Path, **extra: object) -> list[str]:
    """The same as ``--set`` arguments of the CLI."""
    return [arg for pair in tiny_recsys_overrides(root, **extra) for arg in ("--set", pair)]
