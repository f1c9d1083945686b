"""Self-supervised methods: thin compositions around the losses, each an nn.Module."""

from __future__ import annotations

from contrastkit.methods.base import Method, StepOutput, embedding_stats
from contrastkit.methods.simclr import SimCLR

METHODS = ("simclr",)

__all__ = ["METHODS", "Method", "SimCLR", "StepOutput", "embedding_stats"]
