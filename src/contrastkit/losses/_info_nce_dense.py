"""The dense path of InfoNCE: any negative strategy, and negative-Euclidean similarity.

The logits of a block of query rows are computed with autograd and each row's loss follows
from them (hard top-k / threshold / margin selection, hard-negative weighting, debiasing,
decoupling: see :mod:`contrastkit.negatives.mining`). Above the keep budget the query rows
are chunked under activation checkpointing; every strategy is row-local, so that is exact.
"""

from __future__ import annotations

import functools
import math
from typing import overload

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from contrastkit.losses._info_nce_common import (
    _IGNORE,
    _auto_tile_side,
    _keeps_logits,
)
from contrastkit.negatives.mining import SELECTION_KINDS, NegativeSampling
from contrastkit.similarity import get_similarity


@overload
def _rows(t: Tensor, start: int, stop: int) -> Tensor: ...
@overload
def _rows(t: None, start: int, stop: int) -> None: ...
def _rows(t: Tensor | None, start: int, stop: int) -> Tensor | None:
    """Rows start:stop of t; t itself when that is all of it (a slice would cost a backward copy)."""
    if t is None or (start == 0 and stop == t.shape[0]):
        return t
    return t[start:stop]


def _masked_lse(x: Tensor, mask: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """log sum_{mask} w exp(x) per row and whether that sum is > 0 (value 0 and no NaN
    gradient where it is empty)."""
    xm = x.masked_fill(~mask, float("-inf"))
    top = xm.amax(1, keepdim=True).detach()
    top = torch.where(top > float("-inf"), top, 0.0)
    terms = (xm - top).exp()
    if weights is not None:
        terms = terms * weights
    total = terms.sum(1)
    nonempty = total > 0
    lse = torch.where(nonempty, torch.where(nonempty, total, 1.0).log() + top.squeeze(1), 0.0)
    return lse, nonempty


def _debiased_log_mass(
    log_neg: Tensor, log_pos: Tensor, npos: Tensor, nneg: Tensor, tau_plus: float, inv_t: Tensor | float
) -> Tensor:
    """log of max((Σ_neg - τ⁺·N·mean_pos e^s) / (1 - τ⁺), N·e^{-1/t}) (Chuang et al. 2020, eq. 6)."""
    n = nneg.clamp_min(1).to(log_neg.dtype)
    log_bias = log_pos + torch.log(tau_plus * n / npos.clamp_min(1).to(log_neg.dtype))
    top = torch.maximum(log_neg, log_bias).detach()
    diff = (log_neg - top).exp() - (log_bias - top).exp()
    positive = diff > 0
    est = top + torch.where(positive, diff, 1.0).log() - math.log1p(-tau_plus)
    floor = n.log() - inv_t
    return torch.where(positive, torch.maximum(est, floor), floor)


def _dense_rows(
    q: Tensor,
    keys: Tensor,
    weights: Tensor | None,
    target: Tensor | None,
    mask: Tensor | None,
    q_labels: Tensor | None,
    k_labels: Tensor | None,
    scale: Tensor | None,
    *,
    inv_t: float,
    metric: str,
    num_pos_keys: int,
    self_offset: int | None,
    strategy: NegativeSampling | None,
    sum_rows: bool,
) -> Tensor:
    """InfoNCE loss of each row of a block of queries with the full logits of the block (autograd).

    Per row: log(w_P·Σ_P e^s + Ng) − mean_P s, Ng the (selected, weighted, importance-weighted,
    debiased) negative mass; 0 for rows without a positive. The sum when ``sum_rows``.
    """
    sim = get_similarity(metric)(q, keys)
    logits = sim * inv_t if scale is None else sim * (inv_t * scale)
    rows, cols = logits.shape
    m = num_pos_keys
    pos = torch.zeros(rows, cols, dtype=torch.bool, device=q.device)
    if target is not None:
        has = target != _IGNORE
        pos[has, target[has]] = True
    elif mask is not None:
        pos[:, :m] = mask
    else:
        assert q_labels is not None and k_labels is not None
        pos[:, :m] = q_labels[:, None] == k_labels[None, :]
    other = torch.ones_like(pos)
    if self_offset is not None:
        other.diagonal(self_offset).fill_(False)
        pos &= other
    neg = other & ~pos
    npos = pos.sum(1)
    pos_mean = torch.where(pos, logits, 0.0).sum(1) / npos.clamp_min(1).to(logits.dtype)
    w = None if weights is None else weights.to(logits.dtype)
    if w is not None:
        neg = neg & (w > 0)

    s = strategy
    beta = tau = 0.0
    pos_weight = 1.0
    if s is not None:
        if s.kind in SELECTION_KINDS:
            raw = sim.detach()
            if s.kind == "hard_topk":
                ranked = raw.masked_fill(~neg, float("-inf"))
                kth = ranked.topk(min(s.k, cols), dim=1).values[:, -1:]
                keep = raw >= kth
            elif s.kind == "threshold":
                keep = raw >= s.threshold
            else:
                pos_sim = torch.where(pos, raw, 0.0).sum(1) / npos.clamp_min(1).to(raw.dtype)
                keep = raw >= (pos_sim - s.margin)[:, None]
            dropped = 1.0 - s.strength
            if dropped == 0.0:
                neg = neg & keep
            else:
                factor = torch.where(keep, 1.0, dropped).to(logits.dtype)
                w = factor if w is None else w * factor
        elif s.kind == "hard_weighting":
            beta, tau = s.beta * s.strength, s.tau_plus * s.strength
        elif s.kind == "debiased":
            tau = s.tau_plus * s.strength
        elif s.kind == "decoupled":
            pos_weight = 1.0 - s.strength

    log_pos, _ = _masked_lse(logits, pos)
    if beta > 0:
        nneg = neg.sum(1)
        log_num, has_neg = _masked_lse((1.0 + beta) * logits, neg, w)
        log_den, _ = _masked_lse(beta * logits, neg)
        log_neg = nneg.clamp_min(1).to(logits.dtype).log() + log_num - log_den
    else:
        log_neg, has_neg = _masked_lse(logits, neg, w)
    if tau > 0:
        nneg = neg.sum(1)
        t_inv: Tensor | float = inv_t if scale is None else inv_t * scale
        log_neg = _debiased_log_mass(log_neg, log_pos, npos, nneg, tau, t_inv)
    valid = npos > 0
    if pos_weight > 0:
        log_pos_w = log_pos + math.log(pos_weight)
        log_den_row = torch.where(has_neg, torch.logaddexp(log_pos_w, log_neg), log_pos_w)
    else:
        log_den_row = log_neg
        valid = valid & has_neg
    row = torch.where(valid, log_den_row - pos_mean, 0.0)
    return row.sum() if sum_rows else row


def _dense_path(
    q: Tensor,
    k_pos: Tensor,
    k_neg: Tensor | None,
    weights: Tensor | None,
    target: Tensor | None,
    mask: Tensor | None,
    q_labels: Tensor | None,
    k_labels: Tensor | None,
    *,
    temperature: float | Tensor,
    metric: str,
    self_keys: bool,
    strategy: NegativeSampling | None,
    chunk_size: int | str | None,
    sum_rows: bool,
) -> Tensor:
    """The dense path over blocks of query rows (checkpointed when there is more than one)."""
    n = q.shape[0]
    m = k_pos.shape[0]
    k_all = k_pos if k_neg is None else torch.cat([k_pos, k_neg], dim=0)
    cols = k_all.shape[0]
    if isinstance(temperature, Tensor):
        inv_t, scale = 1.0, 1.0 / temperature
    else:
        inv_t, scale = 1.0 / float(temperature), None
    if _keeps_logits(chunk_size, n * cols):
        step = n
    elif isinstance(chunk_size, int):
        step = chunk_size
    else:
        step = _auto_tile_side(cols)
    pieces = []
    for start in range(0, n, step):
        stop = min(n, start + step)
        fn = functools.partial(
            _dense_rows,
            inv_t=inv_t,
            metric=metric,
            num_pos_keys=m,
            self_offset=start if self_keys else None,
            strategy=strategy,
            sum_rows=sum_rows,
        )
        args = (
            _rows(q, start, stop),
            k_all,
            _rows(weights, start, stop),
            _rows(target, start, stop),
            _rows(mask, start, stop),
            _rows(q_labels, start, stop),
            k_labels,
            scale,
        )
        if step < n and torch.is_grad_enabled():
            pieces.append(checkpoint(fn, *args, use_reentrant=False))
        else:
            pieces.append(fn(*args))
    if len(pieces) == 1:
        return pieces[0]
    return torch.stack(pieces).sum() if sum_rows else torch.cat(pieces)
