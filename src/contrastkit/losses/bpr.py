"""Bayesian personalised ranking loss (Rendle et al. 2009, arXiv:1205.2618)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.errors import UserError, check_choice

_REDUCTIONS = ("mean", "sum", "none")


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor, reduction: str = "mean") -> Tensor:
    """``-log σ(s_pos − s_neg)`` per (user, positive, negative) triple (Rendle et al. 2009).

    pos_scores and neg_scores have the same shape; neg_scores may carry an extra trailing axis
    of several negatives per positive (pos_scores is broadcast over it).
    """
    check_choice("reduction", reduction, _REDUCTIONS)
    if neg_scores.dim() == pos_scores.dim() + 1:
        pos_scores = pos_scores.unsqueeze(-1)
    if pos_scores.shape != neg_scores.shape:
        raise UserError(
            f"bpr_loss needs scores of the same shape; got {tuple(pos_scores.shape)} and "
            f"{tuple(neg_scores.shape)}"
        )
    losses = F.softplus(neg_scores - pos_scores)  # = -log sigmoid(pos - neg), stable
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


class BPRLoss(nn.Module):
    """Module form of :func:`bpr_loss` (Rendle et al. 2009, arXiv:1205.2618)."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        check_choice("reduction", reduction, _REDUCTIONS)
        self.reduction = reduction

    def forward(self, pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
        return bpr_loss(pos_scores, neg_scores, self.reduction)
