"""Noise-contrastive estimation (Gutmann & Hyvärinen 2010, JMLR 13) and skip-gram negative
sampling (SGNS, Mikolov et al. 2013, arXiv:1310.4546): the binary "data vs noise" losses.

How they relate to InfoNCE (:func:`contrastkit.losses.info_nce`): all three score one data
sample against k noise samples drawn from q. InfoNCE asks a (k+1)-way softmax to pick the data
sample out of the k+1. NCE asks, for each sample on its own, a logistic classifier whether it
is data or noise, with the log-odds ``s − log(k·q(x))``: the noise correction makes ``s`` a
consistent estimate of the unnormalised log-density (log p − log Z), without a partition
function. SGNS is NCE without the correction (log-odds ``s``): it no longer estimates the
density, and instead factorises the shifted pointwise mutual information ``PMI − log k`` of
(word, context) pairs (Levy & Goldberg 2014), which is what makes word2vec's vectors work.

Per row i with positive logit ``s_i`` and negative logits ``n_ij`` (j = 1..k):

- NCE:  ``−log σ(s_i − log(k q_i)) − Σ_j log(1 − σ(n_ij − log(k q_ij)))``
- SGNS: ``−log σ(s_i) − Σ_j log σ(−n_ij)``

computed with ``softplus`` so that large logits neither overflow nor lose precision.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.errors import UserError, check_choice

REDUCTIONS = ("mean", "sum", "none")


def _check(positive: Tensor, negative: Tensor, what: str) -> None:
    if positive.dim() != 1 or negative.dim() != 2 or negative.shape[0] != positive.shape[0]:
        raise UserError(
            f"{what} needs positive logits (N,) and negative logits (N, K); got "
            f"{tuple(positive.shape)} and {tuple(negative.shape)}"
        )


def _reduce(rows: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return rows.mean() if rows.numel() else rows.sum()
    return rows.sum() if reduction == "sum" else rows


def negative_sampling_loss(positive_logits: Tensor, negative_logits: Tensor, *, reduction: str = "mean") -> Tensor:
    """Skip-gram negative sampling (Mikolov et al. 2013): ``−log σ(s) − Σ_j log σ(−n_j)`` per row.

    ``positive_logits`` (N,): the score of each (centre, context) pair; ``negative_logits`` (N, K):
    the scores of the centre with K noise contexts. Reduction over the N rows.
    """
    check_choice("reduction", reduction, REDUCTIONS)
    _check(positive_logits, negative_logits, "negative_sampling_loss")
    rows = F.softplus(-positive_logits) + F.softplus(negative_logits).sum(1)
    return _reduce(rows, reduction)


def nce_loss(
    positive_logits: Tensor,
    negative_logits: Tensor,
    positive_log_noise: Tensor,
    negative_log_noise: Tensor,
    *,
    num_noise: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Noise-contrastive estimation (Gutmann & Hyvärinen 2010): logistic regression of data
    against ``k`` noise samples on the log-odds ``s − log(k·q)``.

    ``positive_log_noise`` (N,) and ``negative_log_noise`` (N, K) are log q of the data and of
    the noise samples under the noise distribution; ``num_noise`` is k (default K, the number of
    noise samples per row). With ``log(k·q) = 0`` everywhere this is :func:`negative_sampling_loss`.
    """
    check_choice("reduction", reduction, REDUCTIONS)
    _check(positive_logits, negative_logits, "nce_loss")
    if positive_log_noise.shape != positive_logits.shape or negative_log_noise.shape != negative_logits.shape:
        raise UserError(
            "nce_loss needs log-noise probabilities shaped like the logits; got "
            f"{tuple(positive_log_noise.shape)} and {tuple(negative_log_noise.shape)}"
        )
    k = negative_logits.shape[1] if num_noise is None else num_noise
    if k < 1:
        raise UserError(f"nce_loss: num_noise must be >= 1, got {k}")
    log_k = math.log(k)
    return negative_sampling_loss(
        positive_logits - (positive_log_noise + log_k),
        negative_logits - (negative_log_noise + log_k),
        reduction=reduction,
    )


class NegativeSamplingLoss(nn.Module):
    """Module form of :func:`negative_sampling_loss` (SGNS, Mikolov et al. 2013)."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)

    def forward(self, positive_logits: Tensor, negative_logits: Tensor) -> Tensor:
        return negative_sampling_loss(positive_logits, negative_logits, reduction=self.reduction)


class NCELoss(nn.Module):
    """Module form of :func:`nce_loss` (Gutmann & Hyvärinen 2010); ``log_noise`` (V,) holds
    log q of every item of the vocabulary, ``forward`` takes the logits and the item ids."""

    def __init__(self, log_noise: Tensor, reduction: str = "mean") -> None:
        super().__init__()
        if log_noise.dim() != 1:
            raise UserError(f"NCELoss needs log q of each item, shape (V,); got {tuple(log_noise.shape)}")
        self.register_buffer("log_noise", log_noise.float())
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)

    def forward(
        self, positive_logits: Tensor, negative_logits: Tensor, positive_ids: Tensor, negative_ids: Tensor
    ) -> Tensor:
        table: Tensor = self.log_noise  # type: ignore[assignment]
        return nce_loss(
            positive_logits, negative_logits, table[positive_ids], table[negative_ids], reduction=self.reduction
        )
