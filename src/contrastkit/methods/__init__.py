"""Self-supervised methods: thin compositions around the losses, each an nn.Module that declares
its options dataclass and registers itself (see :mod:`contrastkit.methods.registry`).

In your own loop: build a method around your encoder, then per batch
``out = method.training_step(batch)``, ``out.loss.backward()``, ``optimizer.step()``,
``method.on_step_end(step, total_steps)`` (momentum targets, schedules). The batch each one
expects is stated on its class:

- image methods (:class:`SimCLR`, :class:`MoCoV2`, :class:`MoCoV3`, :class:`BYOL`,
  :class:`SimSiam`, :class:`BarlowTwins`, :class:`VICReg`, :class:`SupCon`, :class:`SwAV`,
  :class:`DINO`, :class:`NNCLR`):
  ``{"views": [x1, x2, ...]}``, float (B, C, H, W) normalised views (:mod:`contrastkit.augment`),
  plus ``"labels"`` (B,) for SupCon; SwAV, DINO and NNCLR also take smaller local views after
  the global ones (``"global_views"``: how many come first);
- :class:`SimCSE`: ``{"views": [ids, ...], "masks": [mask, ...]}`` (token ids, attention masks);
  :class:`CoSENT` and :class:`AnglE` (scored pairs): two views and ``"scores"`` (B,);
- :class:`CLIP` (CLIP / SigLIP): ``{"views": [images], "input_ids", "attention_mask"}``;
- recommenders (:class:`MFBPR`, :class:`LightGCN`, :class:`SGL`, :class:`SimGCL`,
  :class:`XSimGCL`): BPR triples ``{"users", "pos", "neg", "epoch"}``;
- :class:`SkipGram`: ``{"centers", "pair_center", "contexts", "negatives"}`` token ids;
- GANs (:class:`DCGAN`, :class:`ContraD`): ``d_step(real, generator)`` / ``g_step(...)``;
- agents (:class:`CURL`, :class:`ATC`): ``update(...)`` on stacked frames; :class:`Pixels` and
  :class:`State` are options only.

Adding a method: one file here with its options and ``@register_method(...)``, and its import
line below.
"""

from __future__ import annotations

from contrastkit.methods import gan, rl  # noqa: F401  (first: the registry keeps its order of methods)
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
from contrastkit.methods.dino import DINO, DINOHead, DINOOptions
from contrastkit.methods.gan import DCGAN, ContraD, ContraDOptions, DCGANOptions, GANMethod
from contrastkit.methods.moco import MoCoV2, MoCoV2Options, MoCoV3, MoCoV3Options
from contrastkit.methods.nnclr import NNCLR, NNCLROptions
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
from contrastkit.methods.rl import ATC, CURL, ATCOptions, CURLOptions, Pixels, PixelsOptions, State, StateOptions
from contrastkit.methods.scored_pairs import AnglE, AnglEOptions, CoSENT, CoSENTOptions, ScoredPairOptions
from contrastkit.methods.simclr import SimCLR, SimCLROptions
from contrastkit.methods.simcse import SentenceEmbeddingMethod, SimCSE, SimCSEOptions, TextMethodOptions
from contrastkit.methods.simsiam import SimSiam, SimSiamOptions
from contrastkit.methods.skipgram import SkipGram, SkipGramOptions
from contrastkit.methods.supcon import SupCon, SupConOptions, semi_supervised_labels
from contrastkit.methods.swav import SwAV, SwAVOptions
from contrastkit.methods.vicreg import VICReg, VICRegOptions

__all__ = [
    "ATC",
    "BYOL",
    "CLIP",
    "CURL",
    "DCGAN",
    "DINO",
    "MFBPR",
    "NNCLR",
    "SGL",
    "ATCOptions",
    "AnglE",
    "AnglEOptions",
    "BYOLOptions",
    "BarlowTwins",
    "BarlowTwinsOptions",
    "CLIPOptions",
    "CURLOptions",
    "CoSENT",
    "CoSENTOptions",
    "ContraD",
    "ContraDOptions",
    "ContrastOptions",
    "DCGANOptions",
    "DINOHead",
    "DINOOptions",
    "GANMethod",
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
    "NNCLROptions",
    "Pixels",
    "PixelsOptions",
    "SGLOptions",
    "ScoredPairOptions",
    "SentenceEmbeddingMethod",
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
    "State",
    "StateOptions",
    "StepOutput",
    "SupCon",
    "SupConOptions",
    "SwAV",
    "SwAVOptions",
    "TextMethodOptions",
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
