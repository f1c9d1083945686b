"""Self-supervised methods: thin compositions around the losses, each an nn.Module that declares
its options dataclass and registers itself (see :mod:`contrastkit.methods.registry`).

Adding a method: one file here with its options and ``@register_method(...)``, and its import
line below.
"""

from __future__ import annotations

from contrastkit.methods import gan, rl  # noqa: F401  (tasks gan's and rl's methods register)
from contrastkit.methods.barlow_twins import BarlowTwins, BarlowTwinsOptions
from contrastkit.methods.base import (
    ContrastOptions,
    HeadOptions,
    ImageMethodOptions,
    Method,
    MomentumOptions,
    StepOutput,
    TwoViewMethod,
    embedding_stats,
)
from contrastkit.methods.byol import BYOL, BYOLOptions
from contrastkit.methods.clip import CLIP, CLIPOptions, SigLIPOptions
from contrastkit.methods.moco import MoCoV2, MoCoV2Options, MoCoV3, MoCoV3Options
from contrastkit.methods.recsys import (
    MFBPR,
    SGL,
    GraphOptions,
    GraphRecommender,
    LightGCN,
    LightGCNOptions,
    SGLOptions,
    SimGCL,
    SimGCLOptions,
    XSimGCL,
    XSimGCLOptions,
)
from contrastkit.methods.registry import (
    MethodOptions,
    MethodSpec,
    all_methods,
    get_method,
    register_method,
)
from contrastkit.methods.simclr import SimCLR, SimCLROptions
from contrastkit.methods.simcse import SimCSE, SimCSEOptions
from contrastkit.methods.simsiam import SimSiam, SimSiamOptions
from contrastkit.methods.skipgram import SkipGram, SkipGramOptions
from contrastkit.methods.supcon import SupCon, SupConOptions, semi_supervised_labels
from contrastkit.methods.vicreg import VICReg, VICRegOptions

__all__ = [
    "BYOL",
    "CLIP",
    "MFBPR",
    "SGL",
    "BYOLOptions",
    "BarlowTwins",
    "BarlowTwinsOptions",
    "CLIPOptions",
    "ContrastOptions",
    "GraphOptions",
    "GraphRecommender",
    "HeadOptions",
    "ImageMethodOptions",
    "LightGCN",
    "LightGCNOptions",
    "Method",
    "MethodOptions",
    "MethodSpec",
    "MoCoV2",
    "MoCoV2Options",
    "MoCoV3",
    "MoCoV3Options",
    "MomentumOptions",
    "SGLOptions",
    "SigLIPOptions",
    "SimCLR",
    "SimCLROptions",
    "SimCSE",
    "SimCSEOptions",
    "SimGCL",
    "SimGCLOptions",
    "SimSiam",
    "SimSiamOptions",
    "SkipGram",
    "SkipGramOptions",
    "StepOutput",
    "SupCon",
    "SupConOptions",
    "TwoViewMethod",
    "VICReg",
    "VICRegOptions",
    "XSimGCL",
    "XSimGCLOptions",
    "all_methods",
    "embedding_stats",
    "get_method",
    "register_method",
    "semi_supervised_labels",
]
