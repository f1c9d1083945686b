"""What every method offers the trainer and the evaluation: a small interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn


@dataclass
class StepOutput:
    """A training step's loss (to back-propagate) and scalar logs (for progress and CSV)."""

    loss: Tensor
    logs: dict[str, float] = field(default_factory=dict)


class Method(Protocol):
    """The trainer's view of a method: an nn.Module with an encoder and a training step."""

    encoder: nn.Module

    def training_step(self, batch: dict[str, Any]) -> StepOutput: ...

    def on_step_end(self, step: int, total_steps: int) -> None: ...


@torch.no_grad()
def embedding_stats(z: Tensor) -> dict[str, float]:
    """Collapse diagnostics on a batch of embeddings: mean per-dimension std of the normalised rows."""
    zn = torch.nn.functional.normalize(z.float(), dim=1)
    return {"emb_std": float(zn.std(dim=0).mean()) * float(zn.shape[1]) ** 0.5}
