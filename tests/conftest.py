"""Shared fixtures: tiny, fast configurations on the embedded digits data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from contrastkit.training import Callback, Trainer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

torch.set_num_threads(1)  # two xdist workers on two cores: one thread each, never oversubscribed


class Interrupted(Exception):
    """Raised by :class:`InterruptAt`: stands for a process killed mid-run."""


class InterruptAt(Callback):
    """A training callback that raises :class:`Interrupted` once the loop reaches ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, trainer: Trainer, logs: dict[str, float] | None) -> None:
        if trainer.step == self.step:
            raise Interrupted


def tiny_overrides(**extra: Any) -> list[str]:
    """--set overrides that make the digits quickstart run in a few seconds."""
    base = {
        "model.width": 8,
        "model.projection_hidden_dim": 32,
        "model.projection_dim": 16,
        "train.batch_size": 64,
        "train.max_steps": 6,
        "train.checkpoint_every": 3,
        "train.log_every": 1,
        "train.progress": False,
        "eval.few_label_shots": "[1, 5]",
        "eval.few_label_draws": 2,
        "eval.knn_k": 20,
        "eval.tsne_points": 120,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture
def tiny_cfg() -> Any:
    from contrastkit.recipes import load_config

    return load_config("digits-simclr", tiny_overrides())


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models and graphs run fastest on one thread (two threads spin on a busy machine):
    torch's and the BLAS libraries' (numpy, scikit-learn)."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    """In-process runs set torch's thread count from train.num_threads: never leak it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# The files that take longest (multi-process runs, the documented commands), first: `make unit`
# hands whole files to its two workers in collection order (--dist loadfile
# --no-loadscope-reorder), so these start at once and the short files fill in around them,
# instead of one of them starting last and running alone.
LONGEST_FIRST = (
    "tests/training/test_preemption.py",
    "tests/test_docs.py",
    "tests/test_docs_python.py",
    "tests/test_docs_guides.py",
    "tests/sweep/test_workers.py",
    "tests/report/test_report.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest as collected
