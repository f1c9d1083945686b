"""Self-supervised methods: thin compositions around the losses, each an nn.Module."""

from __future__ import annotations

from contrastkit.methods.barlow_twins import BarlowTwins
from contrastkit.methods.base import Method, StepOutput, TwoViewMethod, embedding_stats
from contrastkit.methods.byol import BYOL
from contrastkit.methods.moco import MoCoV2, MoCoV3
from contrastkit.methods.simclr import SimCLR
from contrastkit.methods.simsiam import SimSiam
from contrastkit.methods.supcon import SupCon, semi_supervised_labels
from contrastkit.methods.vicreg import VICReg

METHODS = ("simclr", "moco_v2", "moco_v3", "byol", "simsiam", "barlow_twins", "vicreg", "supcon")

__all__ = [
    "BYOL",
    "METHODS",
    "BarlowTwins",
    "Method",
    "MoCoV2",
    "MoCoV3",
    "SimCLR",
    "SimSiam",
    "StepOutput",
    "SupCon",
    "TwoViewMethod",
    "VICReg",
    "embedding_stats",
    "semi_supervised_labels",
]
