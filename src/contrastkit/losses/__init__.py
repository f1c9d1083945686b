"""Contrastive losses: one pure function and its thin nn.Module wrapper per family."""

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
from contrastkit.losses.nce import NCELoss, NegativeSamplingLoss, nce_loss, negative_sampling_loss
from contrastkit.losses.triplet import MININGS, TripletMarginLoss, triplet_margin_loss
from contrastkit.losses.vicreg import VICRegLoss, covariance_term, variance_term, vicreg_loss

__all__ = [
    "MININGS",
    "BPRLoss",
    "BarlowTwinsLoss",
    "ContrastiveMarginLoss",
    "InfoNCELoss",
    "NCELoss",
    "NTXentLoss",
    "NegativeCosineLoss",
    "NegativeSamplingLoss",
    "NormalizedMSELoss",
    "SupConLoss",
    "TripletMarginLoss",
    "VICRegLoss",
    "barlow_twins_loss",
    "bpr_loss",
    "contrastive_margin_loss",
    "covariance_term",
    "cross_correlation",
    "info_nce",
    "nce_loss",
    "negative_cosine_loss",
    "negative_sampling_loss",
    "normalized_mse_loss",
    "pair_margin_loss",
    "triplet_margin_loss",
    "variance_term",
    "vicreg_loss",
]
