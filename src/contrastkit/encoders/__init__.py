"""Encoders (backbones) that map inputs to feature vectors; each exposes `out_dim`."""

from __future__ import annotations

from contrastkit.encoders.graph import LightGCNEncoder, normalized_adjacency, propagate
from contrastkit.encoders.image import (
    IMAGE_ENCODERS,
    ConvNet5,
    ImageEncoder,
    SmallResNet,
    TorchvisionResNet,
    build_image_encoder,
)

__all__ = [
    "IMAGE_ENCODERS",
    "ConvNet5",
    "ImageEncoder",
    "LightGCNEncoder",
    "SmallResNet",
    "TorchvisionResNet",
    "build_image_encoder",
    "normalized_adjacency",
    "propagate",
]
