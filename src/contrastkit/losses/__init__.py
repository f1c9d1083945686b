"""Contrastive losses: one pure function and its thin nn.Module wrapper per family."""

from __future__ import annotations

from contrastkit.losses.info_nce import InfoNCELoss, NTXentLoss, SupConLoss, info_nce
from contrastkit.losses.margin import (
    ContrastiveMarginLoss,
    contrastive_margin_loss,
    pair_margin_loss,
)
from contrastkit.losses.triplet import MININGS, TripletMarginLoss, triplet_margin_loss

__all__ = [
    "MININGS",
    "ContrastiveMarginLoss",
    "InfoNCELoss",
    "NTXentLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "contrastive_margin_loss",
    "info_nce",
    "pair_margin_loss",
    "triplet_margin_loss",
]
