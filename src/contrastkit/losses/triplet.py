"""Triplet margin loss with in-batch mining: batch-hard and batch-all (Hermans, Beyer & Leibe
2017, arXiv:1703.07737) and semi-hard (FaceNet, Schroff, Kalenichenko & Philbin 2015,
arXiv:1503.03832).

Every mode needs only O(B²) memory: batch-all and semi-hard sort each anchor's negative
distances once and answer "which negatives are closer than x" with a binary search (and
prefix sums), instead of building the B x B x B triplet tensor.
"""

from __future__ import annotations

from typing import Literal, overload

import torch
from torch import Tensor, nn

from contrastkit.errors import UserError, check_choice
from contrastkit.losses.margin import check_labelled_batch, check_margin
from contrastkit.similarity import DISTANCES, distance_matrix

MININGS = ("batch_hard", "batch_all", "semi_hard")
TRIPLET_REDUCTIONS = ("mean", "sum", "none")


# for type checkers: two declarations that differ only in return_stats and the return type
@overload
def triplet_margin_loss(
    embeddings: Tensor, labels: Tensor, margin: float = ..., *, mining: str = ...,
    distance: str = ..., reduction: str = ..., return_stats: Literal[False] = ...,
) -> Tensor: ...
@overload
def triplet_margin_loss(
    embeddings: Tensor, labels: Tensor, margin: float = ..., *, mining: str = ...,
    distance: str = ..., reduction: str = ..., return_stats: Literal[True],
) -> tuple[Tensor, dict[str, Tensor]]: ...


def triplet_margin_loss(
    embeddings: Tensor,
    labels: Tensor,
    margin: float = 0.2,
    *,
    mining: str = "batch_hard",
    distance: str = "euclidean",
    reduction: str = "mean",
    return_stats: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """Triplet loss relu(d(a,p) − d(a,n) + margin) over in-batch triplets chosen by ``mining``.

    - "batch_hard": per anchor, its farthest positive and closest negative (Hermans et al.);
      "mean" averages over anchors that have both.
    - "batch_all": every valid triplet (a, p, n); "mean" averages over the triplets with a
      positive loss (Hermans et al.'s "batch all ≠0"), 0 when none is active.
    - "semi_hard": per positive pair (a, p), the closest negative farther than p
      (d(a,n) > d(a,p)); when none exists, the closest (hardest) negative (FaceNet,
      Schroff et al.); "mean" averages over positive pairs whose anchor has a negative.

    "sum" is the total, "none" the per-anchor totals (B,). With ``return_stats`` also
    returns detached counts: ``num_triplets`` (terms considered), ``num_active`` (terms with
    positive loss) and ``fraction_active``.
    """
    check_choice("mining", mining, MININGS)
    check_choice("distance", distance, DISTANCES)
    check_choice("reduction", reduction, TRIPLET_REDUCTIONS)
    check_margin(margin)
    check_labelled_batch(embeddings, labels)
    b = embeddings.shape[0]
    d = distance_matrix(embeddings, None, distance)
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    pos = same & ~torch.eye(b, dtype=torch.bool, device=d.device)
    neg = ~same
    has_neg = neg.any(1)
    inf = d.new_tensor(float("inf"))
    zero = d.new_zeros(())

    if mining == "batch_hard":
        hardest_pos = torch.where(pos, d, -inf).amax(1) if b else d.new_zeros(0)
        hardest_neg = torch.where(neg, d, inf).amin(1) if b else d.new_zeros(0)
        valid = pos.any(1) & has_neg
        per_anchor = torch.where(valid, torch.relu(hardest_pos - hardest_neg + margin), zero)
        num_terms = valid.sum()
        num_active = (per_anchor > 0).sum()
        count = num_terms
    else:
        # each anchor's negative distances, ascending; non-negatives (inf) sort last
        sorted_neg = torch.sort(torch.where(neg, d, inf), dim=1).values
        n_neg = neg.sum(1)
        if mining == "batch_all":
            in_range = n_neg.unsqueeze(1) > torch.arange(b, device=d.device)
            finite = torch.where(in_range, sorted_neg, zero)
            prefix = torch.cat([d.new_zeros(b, 1), finite.cumsum(1)], dim=1)
            # negatives with d(a,n) < d(a,p) + margin, i.e. active triplets, and their sum
            threshold = (d + margin).contiguous()
            cnt = torch.searchsorted(sorted_neg, threshold, side="left")
            cnt = torch.where(pos, cnt, 0)
            pair_total = cnt * threshold - prefix.gather(1, cnt)
            per_anchor = torch.where(pos, pair_total, zero).sum(1)
            num_terms = (pos.sum(1) * n_neg).sum()
            num_active = cnt.sum()
            count = num_active
        else:  # semi_hard
            idx = torch.searchsorted(sorted_neg, d.contiguous(), side="right")
            has_semi = idx < n_neg.unsqueeze(1)
            semi = sorted_neg.gather(1, idx.clamp_max(max(b - 1, 0)))
            chosen = torch.where(has_semi, semi, sorted_neg[:, :1])
            valid_pair = pos & has_neg.unsqueeze(1)
            pair_loss = torch.where(valid_pair, torch.relu(d - chosen + margin), zero)
            per_anchor = pair_loss.sum(1)
            num_terms = valid_pair.sum()
            num_active = (pair_loss > 0).sum()
            count = num_terms

    if reduction == "none":
        loss = per_anchor
    elif reduction == "sum":
        loss = per_anchor.sum()
    else:
        loss = per_anchor.sum() / count.clamp_min(1).to(per_anchor.dtype)
    if not return_stats:
        return loss
    stats = {
        "num_triplets": num_terms.detach().float(),
        "num_active": num_active.detach().float(),
        "fraction_active": num_active.detach().float() / num_terms.clamp_min(1).float(),
    }
    return loss, stats


class TripletMarginLoss(nn.Module):
    """Module form of :func:`triplet_margin_loss` (Hermans et al. 2017; Schroff et al. 2015)."""

    def __init__(
        self,
        margin: float = 0.2,
        mining: str = "batch_hard",
        distance: str = "euclidean",
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if margin < 0:
            raise UserError(f"margin must be >= 0; got {margin!r}")
        check_choice("mining", mining, MININGS)
        check_choice("distance", distance, DISTANCES)
        check_choice("reduction", reduction, TRIPLET_REDUCTIONS)
        self.margin = margin
        self.mining = mining
        self.distance = distance
        self.reduction = reduction

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return triplet_margin_loss(
            embeddings,
            labels,
            self.margin,
            mining=self.mining,
            distance=self.distance,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}, distance={self.distance!r}"
