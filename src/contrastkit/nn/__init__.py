"""Building blocks shared by methods: projection / prediction heads."""

from __future__ import annotations

from contrastkit.nn.heads import ACTIVATIONS, MLPHead, ProjectionHead

__all__ = ["ACTIVATIONS", "MLPHead", "ProjectionHead"]
