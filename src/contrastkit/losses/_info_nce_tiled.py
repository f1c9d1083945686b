"""The denominator path of InfoNCE: uniform negatives with dot / cosine similarity, exact.

Each row's loss is lse_i - mean positive logit_i: the log-sum-exp over the keys comes from
the tiled custom autograd function of :mod:`contrastkit.losses._info_nce_lse` (exp-logit
tiles kept, or chunked with recomputation in the backward so extra memory is one tile), the
positive term is O(rows x D) (a gather, per-class key sums, or a blocked mask product).
Small one-positive problems use ``cross_entropy`` on the full logits instead.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.losses._info_nce_common import (
    _IGNORE,
    _auto_tile_side,
    _keeps_logits,
    _Positives,
)
from contrastkit.losses._info_nce_lse import _blocks, _LseSpec, _RowLogSumExp, _scaled

# up to this many logits, one-positive problems use cross_entropy on the full logits
SMALL_ELEMENTS = 1 << 20
# side of the square tiles of the symmetric (keys = queries) case, logits kept or recomputed
KEEP_MIRROR_TILE = 2048
AUTO_MIRROR_TILE = 2048
# from this many rows on, a positive_index that is a permutation gets a gather-based backward
_PERMUTATION_CHECK_ROWS = 2048
# exp(logit) needs no shift while |logit| <= this (cosine logits are bounded by 1 / t)
_EXP_BOUND = {torch.float32: 40.0, torch.float64: 300.0}


class _MaskedKeySum(torch.autograd.Function):
    """mask (N, M) bool @ keys (M, D) in column blocks, without a float copy of the whole mask."""

    @staticmethod
    def forward(ctx: Any, mask: Tensor, keys: Tensor, block: int) -> Tensor:
        ctx.save_for_backward(mask)
        ctx.block = block
        out = keys.new_zeros(mask.shape[0], keys.shape[1])
        for c0, c1 in _blocks(keys.shape[0], block):
            out += mask[:, c0:c1].to(keys.dtype) @ keys[c0:c1]
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        (mask,) = ctx.saved_tensors
        parts = [
            mask[:, c0:c1].T.to(grad.dtype) @ grad for c0, c1 in _blocks(mask.shape[1], ctx.block)
        ]
        return None, torch.cat(parts) if parts else grad.new_zeros(0, grad.shape[1]), None


class _PairDot(torch.autograd.Function):
    """(q_i . k_{target_i}) per row; the backward scatters into the keys with a gather when the
    targets are a permutation (CPU index_add is slow row by row), else one accumulating put."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, keys: Tensor, target: Tensor, inverse: Tensor | None) -> Tensor:
        ctx.save_for_backward(q, keys, target, inverse)
        return torch.linalg.vecdot(q, keys[target])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        q, keys, target, inverse = ctx.saved_tensors
        gq = grad[:, None] * keys[target] if ctx.needs_input_grad[0] else None
        gk = None
        if ctx.needs_input_grad[1]:
            rows = grad[:, None] * q
            if inverse is not None:
                gk = rows[inverse]
            else:
                gk = keys.new_zeros(keys.shape).index_put_((target,), rows, accumulate=True)
        return gq, gk, None, None


def _positive_term(
    qs: Tensor,
    k_pos: Tensor,
    pos: _Positives,
    *,
    inv_t: float,
    self_keys: bool,
) -> tuple[Tensor, Tensor]:
    """Mean positive logit of each row (autograd, O(rows x D)) and whether the row has one."""
    if pos.target is not None:
        valid = pos.target != _IGNORE
        target = pos.target.clamp_min(0)
        inverse = None
        n = target.shape[0]
        # a permutation (SimCLR, MoCo) scatters its gradient by a gather; worth the check only
        # where the row-by-row accumulating put of the general case is slow
        if n >= _PERMUTATION_CHECK_ROWS and n == k_pos.shape[0]:
            order = torch.argsort(target)
            if torch.equal(target[order], torch.arange(n, device=target.device)):
                inverse = order
        return _PairDot.apply(_scaled(qs, inv_t), k_pos, target, inverse), valid
    if pos.mask is not None:
        mask = pos.mask
        block = _auto_tile_side(mask.shape[0])
        summed = _MaskedKeySum.apply(mask, k_pos, block)
        count = mask.sum(1)
        if self_keys:  # a row's own key is never its positive
            own = mask.diagonal()
            summed = summed - own[:, None].to(k_pos.dtype) * k_pos
            count = count - own.long()
    else:
        assert pos.q_labels is not None and pos.k_labels is not None
        n = pos.q_labels.shape[0]
        both = pos.q_labels if self_keys else torch.cat([pos.q_labels, pos.k_labels])
        classes, ids = torch.unique(both, return_inverse=True)
        q_ids, k_ids = (ids, ids) if self_keys else (ids[:n], ids[n:])
        class_sum = k_pos.new_zeros(classes.shape[0], k_pos.shape[1]).index_put(
            (k_ids,), k_pos, accumulate=True
        )
        summed = class_sum[q_ids]
        count = torch.bincount(k_ids, minlength=classes.shape[0])[q_ids]
        if self_keys:
            summed = summed - k_pos
            count = count - 1
    valid = count > 0
    mean = inv_t * (qs * summed).sum(1) / count.clamp_min(1).to(qs.dtype)
    return mean, valid


def _denominator_path(
    q: Tensor,
    k_pos: Tensor,
    k_neg: Tensor | None,
    weights: Tensor | None,
    positives: _Positives,
    *,
    temperature: float | Tensor,
    bounded_sim: bool,
    self_keys: bool,
    chunk_size: int | str | None,
    mean: bool = False,
) -> tuple[Tensor, bool]:
    """Per-row loss lse_i − mean positive logit_i (0 without a positive), uniform negatives,
    and False; or, when ``mean`` (every row is known to have a positive) and the small
    cross-entropy path applies, the mean loss and True."""
    n = q.shape[0]
    m = k_pos.shape[0]
    k_extra = 0 if k_neg is None else k_neg.shape[0]
    if isinstance(temperature, Tensor):
        # a tensor temperature scales the queries (its gradient flows through them); the keys
        # stay unscaled, so the logits are no longer symmetric and no bound is known
        inv_t = 1.0
        qs = q * (1.0 / temperature).to(q.dtype)
        lse_keys: Tensor | None = k_pos
        bounded = False
    else:
        inv_t = 1.0 / float(temperature)
        qs = q
        lse_keys = None if self_keys else k_pos
        bounded = bounded_sim and inv_t <= _EXP_BOUND[q.dtype]
    cols = m + k_extra
    keep_all = _keeps_logits(chunk_size, n * cols)
    if keep_all and weights is None and positives.target is not None and n * cols <= SMALL_ELEMENTS:
        # small problems: fixed per-op costs dominate, and cross_entropy's fused
        # log-softmax backward needs the fewest ops
        k_all = k_pos if k_neg is None else torch.cat([k_pos, k_neg])
        logits = _scaled(qs, inv_t) @ k_all.T
        if self_keys:
            logits.fill_diagonal_(float("-inf"))
        if mean:
            return F.cross_entropy(logits, positives.target), True
        return F.cross_entropy(logits, positives.target, ignore_index=_IGNORE, reduction="none"), False
    spec_self = lse_keys is None
    mirror = spec_self and bounded and weights is None
    elements = n * m // 2 + n * k_extra if mirror else n * cols
    keep = _keeps_logits(chunk_size, elements)
    if keep:
        tile = KEEP_MIRROR_TILE
        row_block, col_block = (tile, tile) if mirror else (n, max(m, k_extra, 1))
    elif isinstance(chunk_size, int):
        row_block, col_block = (chunk_size, chunk_size) if mirror else (n, chunk_size)
    else:
        if mirror:
            row_block = col_block = AUTO_MIRROR_TILE
        else:
            col_block = max(128, _auto_tile_side(n))
            row_block = min(n, _auto_tile_side(col_block))
    spec = _LseSpec(
        inv_t=inv_t,
        self_keys=spec_self,
        exclude_diag=self_keys,
        mirror=mirror,
        bounded=bounded,
        row_block=row_block,
        col_block=col_block,
        keep=keep,
        positives=positives if weights is not None else None,
    )
    lse = _RowLogSumExp.apply(spec, qs, lse_keys, k_neg, weights)
    pos_mean, has_pos = _positive_term(qs, k_pos, positives, inv_t=inv_t, self_keys=self_keys)
    # rows without a positive: lse may be -inf there (no keys); where() passes them no gradient
    return torch.where(has_pos, lse - pos_mean, 0.0), False
