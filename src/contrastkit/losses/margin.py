"""Margin contrastive loss over pairs (Hadsell, Chopra & LeCun 2006, "Dimensionality
Reduction by Learning an Invariant Mapping", CVPR): pull positives together (d²), push
negatives apart until they are at least ``margin`` away (relu(margin − d)²).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contrastkit.errors import UserError, check_choice
from contrastkit.similarity import DISTANCES, distance_matrix, paired_distance

MARGIN_REDUCTIONS = ("mean", "sum", "none")


def check_margin(margin: float) -> None:
    if not isinstance(margin, (int, float)) or margin < 0:
        raise UserError(f"margin must be a number >= 0; got {margin!r}")


def check_labelled_batch(embeddings: Tensor, labels: Tensor) -> None:
    """Embeddings (B, D) with labels (B,), as the in-batch margin losses take them."""
    if embeddings.dim() != 2 or labels.shape != (embeddings.shape[0],):
        raise UserError(
            f"need embeddings (B, D) and labels (B,); got {tuple(embeddings.shape)} "
            f"and {tuple(labels.shape)}"
        )


def _hadsell_cost(d: Tensor, similar: Tensor, margin: float) -> Tensor:
    """Per-pair cost of Hadsell et al.: d² where ``similar``, else relu(margin − d)²."""
    return torch.where(similar, d.pow(2), torch.relu(margin - d).pow(2))


def contrastive_margin_loss(
    embeddings: Tensor,
    labels: Tensor,
    margin: float = 1.0,
    *,
    distance: str = "euclidean",
    reduction: str = "mean",
) -> Tensor:
    """Margin contrastive loss over all pairs of a batch (Hadsell et al. 2006).

    embeddings (B, D), labels (B,). Pair (i, j), i != j, is positive when the labels are equal
    and costs d_ij², else it costs relu(margin − d_ij)². reduction "mean" (balanced) is
    mean over positive pairs + mean over negative pairs (a term is 0 when the batch has no
    such pair), so the many negatives do not drown the few positives; "sum" sums over
    unordered pairs; "none" returns the (B, B) matrix of pair losses (zero diagonal).
    """
    check_choice("reduction", reduction, MARGIN_REDUCTIONS)
    check_choice("distance", distance, DISTANCES)
    check_margin(margin)
    check_labelled_batch(embeddings, labels)
    d = distance_matrix(embeddings, None, distance)
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    off_diag = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos = same & off_diag
    neg = ~same
    pair = _hadsell_cost(d, pos, margin) * off_diag
    if reduction == "none":
        return pair
    if reduction == "sum":
        return pair.sum() / 2
    zero = pair.new_zeros(())
    pos_term = torch.where(pos, pair, zero).sum() / pos.sum().clamp_min(1)
    neg_term = torch.where(neg, pair, zero).sum() / neg.sum().clamp_min(1)
    return pos_term + neg_term


def pair_margin_loss(
    x1: Tensor,
    x2: Tensor,
    same: Tensor,
    margin: float = 1.0,
    *,
    distance: str = "euclidean",
    reduction: str = "mean",
) -> Tensor:
    """Margin contrastive loss on explicit pairs (x1[i], x2[i]) (Hadsell et al. 2006).

    same (B,) bool marks similar pairs: cost d² if same else relu(margin − d)².
    reduction: "mean" over pairs, "sum", or "none" (B,).
    """
    check_choice("reduction", reduction, MARGIN_REDUCTIONS)
    check_margin(margin)
    if same.shape != (x1.shape[0],):
        raise UserError(f"same must have shape (B,) = ({x1.shape[0]},); got {tuple(same.shape)}")
    d = paired_distance(x1, x2, distance)
    per_pair = _hadsell_cost(d, same.bool(), margin)
    if reduction == "none":
        return per_pair
    return per_pair.sum() if reduction == "sum" else per_pair.mean()


class ContrastiveMarginLoss(nn.Module):
    """Module form of :func:`contrastive_margin_loss` (Hadsell, Chopra & LeCun 2006)."""

    def __init__(
        self, margin: float = 1.0, distance: str = "euclidean", reduction: str = "mean"
    ) -> None:
        super().__init__()
        check_margin(margin)
        check_choice("distance", distance, DISTANCES)
        check_choice("reduction", reduction, MARGIN_REDUCTIONS)
        self.margin = margin
        self.distance = distance
        self.reduction = reduction

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return contrastive_margin_loss(
            embeddings, labels, self.margin, distance=self.distance, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, distance={self.distance!r}"
