"""What the loaders of the one training loop share (see :class:`contrastkit.training.Batches`)."""

from __future__ import annotations

from typing import Any

import torch


class SeededBatches:
    """A loader whose batches hold ``batch_size`` units (this process's) and whose randomness
    comes from one torch ``generator``: its state is the loader's state in a checkpoint, so a
    resumed run draws exactly the batches of the uninterrupted one."""

    batch_size: int
    generator: torch.Generator

    def units(self, batch: Any) -> int:
        return self.batch_size

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].cpu())
