"""Callbacks the loop offers every task (a task adds its own: early stopping, evaluation rounds)."""

from __future__ import annotations

import warnings
from typing import Any

from contrastkit.training.trainer import Callback, Trainer


class CollapseMonitor(Callback):
    """Warns once when the logged embeddings collapse.

    Collapse means ``emb_std`` below ``min_std`` (all rows near one point) or ``eff_rank``
    below ``min_rank`` (all rows on a line), seen for ``patience`` logged steps in a row (the
    diagnostics exist on logged steps only). ``collapsed_at`` is the step it was first seen.
    """

    def __init__(self, min_std: float = 0.05, min_rank: float = 1.5, patience: int = 3) -> None:
        self.min_std, self.min_rank, self.patience = min_std, min_rank, patience
        self.bad = 0
        self.warned = False
        self.collapsed_at: int | None = None

    def on_step(self, trainer: Trainer, logs: dict[str, float] | None) -> None:
        if self.warned or not logs or "emb_std" not in logs:
            return
        std, rank = logs["emb_std"], logs.get("eff_rank", float("inf"))
        if std < self.min_std or rank < self.min_rank:
            self.bad += 1
        else:
            self.bad = 0
        if self.bad >= self.patience:
            self.warned = True
            self.collapsed_at = trainer.step
            warnings.warn(
                f"representation collapse at step {trainer.step}: embedding std {std:.3f} (healthy ~1), "
                f"effective rank {rank:.2f}; try a lower optim.lr, another method.temperature, "
                "or a larger predictor/momentum",
                RuntimeWarning,
                stacklevel=2,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"bad": self.bad, "warned": self.warned, "collapsed_at": self.collapsed_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bad, self.warned = int(state["bad"]), bool(state["warned"])
        self.collapsed_at = None if state["collapsed_at"] is None else int(state["collapsed_at"])
