"""Contrastive losses: one pure function and its thin nn.Module wrapper per family, to drop into
your own training loop.

- InfoNCE family (one kernel): :func:`info_nce`, :class:`InfoNCELoss`, :class:`NTXentLoss`
  (SimCLR), :class:`SupConLoss`; ``gather_distributed=True`` takes the keys of every process.
- SigLIP: :func:`siglip_loss`, :class:`SigLIPLoss` (pairwise sigmoid; ``gather_distributed``).
- Non-contrastive: :class:`NormalizedMSELoss` (BYOL), :class:`NegativeCosineLoss` (SimSiam),
  :class:`BarlowTwinsLoss`, :class:`VICRegLoss`.
- Metric learning: :class:`ContrastiveMarginLoss`, :class:`TripletMarginLoss` (``MININGS``).
- Sampled softmax: :class:`NCELoss`, :class:`NegativeSamplingLoss` (word2vec), :class:`BPRLoss`.
- Scored pairs (STS-style data): :class:`CoSENTLoss`, :class:`AnglELoss` (its angle term alone:
  :func:`angle_ranking_loss`).
- Matryoshka: :class:`MatryoshkaLoss` / :func:`matryoshka_loss` wrap any of them over nested
  embedding sizes.

Example::

    import torch
    from contrastkit.losses import NTXentLoss

    z1 = torch.randn(8, 32, requires_grad=True)  # projections of view 1
    z2 = torch.randn(8, 32, requires_grad=True)  # and of view 2 of the same 8 images
    loss = NTXentLoss(temperature=0.5)(z1, z2)
    loss.backward()
"""

from __future__ import annotations

from contrastkit.losses.barlow_twins import BarlowTwinsLoss, barlow_twins_loss, cross_correlation
from contrastkit.losses.bpr import BPRLoss, bpr_loss
from contrastkit.losses.byol import (
    NegativeCosineLoss,
    NormalizedMSELoss,
    negative_cosine_loss,
    normalized_mse_loss,
)
from contrastkit.losses.info_nce import InfoNCELoss, NTXentLoss, SupConLoss, info_nce
from contrastkit.losses.margin import (
    ContrastiveMarginLoss,
    contrastive_margin_loss,
    pair_margin_loss,
)
from contrastkit.losses.matryoshka import MatryoshkaLoss, check_matryoshka, matryoshka_loss
from contrastkit.losses.nce import NCELoss, NegativeSamplingLoss, nce_loss, negative_sampling_loss
from contrastkit.losses.scored_pairs import (
    AnglELoss,
    CoSENTLoss,
    angle_loss,
    angle_ranking_loss,
    angle_similarity,
    cosent_loss,
)
from contrastkit.losses.siglip import SigLIPLoss, siglip_loss
from contrastkit.losses.triplet import MININGS, TripletMarginLoss, triplet_margin_loss
from contrastkit.losses.vicreg import VICRegLoss, covariance_term, variance_term, vicreg_loss

__all__ = [
    "MININGS",
    "AnglELoss",
    "BPRLoss",
    "BarlowTwinsLoss",
    "CoSENTLoss",
    "ContrastiveMarginLoss",
    "InfoNCELoss",
    "MatryoshkaLoss",
    "NCELoss",
    "NTXentLoss",
    "NegativeCosineLoss",
    "NegativeSamplingLoss",
    "NormalizedMSELoss",
    "SigLIPLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "VICRegLoss",
    "angle_loss",
    "angle_ranking_loss",
    "angle_similarity",
    "barlow_twins_loss",
    "bpr_loss",
    "check_matryoshka",
    "contrastive_margin_loss",
    "cosent_loss",
    "covariance_term",
    "cross_correlation",
    "info_nce",
    "matryoshka_loss",
    "nce_loss",
    "negative_cosine_loss",
    "negative_sampling_loss",
    "normalized_mse_loss",
    "pair_margin_loss",
    "siglip_loss",
    "triplet_margin_loss",
    "variance_term",
    "vicreg_loss",
]
