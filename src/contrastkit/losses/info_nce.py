"""The one InfoNCE kernel and its thin module wrappers (NT-Xent, SupCon, generic InfoNCE).

InfoNCE: van den Oord et al. 2018, arXiv:1807.03748. NT-Xent (SimCLR): Chen et al. 2020,
arXiv:2002.05709. Supervised contrastive "L_out": Khosla et al. 2020, arXiv:2004.11362.
Negative strategies (contrastkit.negatives.mining): hard-negative weighting (Robinson et al.
2021, arXiv:2010.04592), debiasing (Chuang et al. 2020, arXiv:2007.00224), decoupling (Yeh et
al. 2022, arXiv:2110.06848).

Two exact paths compute it:

- the **denominator path** (uniform negatives, dot / cosine similarity): a custom autograd
  function computes each row's log-sum-exp over the keys tile by tile. Unchunked it keeps the
  exp-logit tiles for the backward (no softmax or one-hot passes, and with keys = queries only
  the upper triangle of the symmetric logits is computed); chunked it keeps nothing of size
  rows x keys and recomputes each tile in the backward, so extra memory is one tile. The
  positive term is O(rows x D) (a gather, per-class key sums, or a blocked mask product).
- the **dense path** (any negative strategy, negative-Euclidean similarity): the logits of a
  block of query rows with autograd, chunked over query rows under activation checkpointing
  (every strategy is row-local, so chunking stays exact).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from contrastkit.errors import UserError, check_choice
from contrastkit.negatives.mining import SELECTION_KINDS, NegativeSampling
from contrastkit.similarity import get_similarity

REDUCTIONS = ("mean", "sum", "none")
_IGNORE = -1  # positive_index value (and cross_entropy ignore_index) of an anchor without one

# "auto" chunking keeps the logits for the backward while rows x keys stays below this many
# elements (512 MiB in float32); above it, tiles are recomputed in the backward.
AUTO_KEEP_ELEMENTS = 1 << 27
# elements of one tile when the chunk is chosen automatically (64 MiB in float32)
AUTO_TILE_ELEMENTS = 1 << 24
# up to this many logits, one-positive problems use cross_entropy on the full logits
SMALL_ELEMENTS = 1 << 20
# side of the square tiles of the symmetric (keys = queries) case, logits kept or recomputed
KEEP_MIRROR_TILE = 2048
AUTO_MIRROR_TILE = 2048
# from this many rows on, a positive_index that is a permutation gets a gather-based backward
_PERMUTATION_CHECK_ROWS = 2048
# exp(logit) needs no shift while |logit| <= this (cosine logits are bounded by 1 / t)
_EXP_BOUND = {torch.float32: 40.0, torch.float64: 300.0}


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_2d(name: str, t: Tensor, width: int | None = None) -> None:
    if t.dim() != 2 or (width is not None and t.shape[1] != width):
        want = "(rows, D)" if width is None else f"(rows, {width})"
        raise UserError(f"{name} must be 2-D {want}; got shape {_shape(t)}")


def _working_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half / bfloat16 accumulate in float32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _labels_to_index(labels: Tensor, key_labels: Tensor, self_keys: bool) -> Tensor | None:
    """positive_index (N,) when every query has at most one positive key, else None.

    Costs a sort of the key labels (and one host sync on an accelerator); it lets the common
    one-positive case (SimCLR-style labels) take the single-positive paths.
    """
    sorted_k, order = torch.sort(key_labels, stable=True)
    dup = sorted_k[1:] == sorted_k[:-1]
    if self_keys:
        # each label at most twice: the partner of a row is the other row with its label
        if bool((dup[1:] & dup[:-1]).any()):
            return None
        false = dup.new_zeros(1)
        next_eq = torch.cat([dup, false])
        prev_eq = torch.cat([false, dup])
        pos = torch.arange(sorted_k.numel(), device=labels.device)
        partner = torch.where(next_eq, pos + 1, torch.where(prev_eq, pos - 1, -1))
        found = partner >= 0
        partner_rows = torch.where(found, order[partner.clamp_min(0)], _IGNORE)
        index = torch.empty_like(partner_rows)
        index[order] = partner_rows
        return index
    if bool(dup.any()):
        return None
    slot = torch.searchsorted(sorted_k, labels).clamp_max(sorted_k.numel() - 1)
    found = sorted_k[slot] == labels
    return torch.where(found, order[slot], _IGNORE)


@overload
def _rows(t: Tensor, start: int, stop: int) -> Tensor: ...
@overload
def _rows(t: None, start: int, stop: int) -> None: ...
def _rows(t: Tensor | None, start: int, stop: int) -> Tensor | None:
    """Rows start:stop of t; t itself when that is all of it (a slice would cost a backward copy)."""
    if t is None or (start == 0 and stop == t.shape[0]):
        return t
    return t[start:stop]


# ----------------------------------------------------------------------------- positives


@dataclass(frozen=True)
class _Positives:
    """Which of the first ``m`` keys are positive for each query: one of target / mask / labels."""

    m: int
    target: Tensor | None = None
    mask: Tensor | None = None
    q_labels: Tensor | None = None
    k_labels: Tensor | None = None

    def tile(self, r0: int, r1: int, c0: int, c1: int) -> Tensor:
        """Boolean (r1 - r0, c1 - c0) positive mask of query rows r0:r1 and keys c0:c1 (< m)."""
        if self.target is not None:
            cols = torch.arange(c0, c1, device=self.target.device)
            return self.target[r0:r1, None] == cols[None, :]
        if self.mask is not None:
            return self.mask[r0:r1, c0:c1]
        assert self.q_labels is not None and self.k_labels is not None
        return self.q_labels[r0:r1, None] == self.k_labels[None, c0:c1]


# ----------------------------------------------------------------------------- denominator path


@dataclass(frozen=True)
class _LseSpec:
    """Static options of :class:`_RowLogSumExp`.

    self_keys: the keys are the queries themselves (``keys`` is None); exclude_diag: key i is
    query i and is left out of row i (self_keys, or keys passed as the unscaled queries);
    mirror: compute each off-diagonal tile of the symmetric logits once and use it for both
    row blocks; bounded: logits lie in [-bound, bound] with exp(bound) safe, so no max shift.
    """

    inv_t: float
    self_keys: bool
    exclude_diag: bool
    mirror: bool
    bounded: bool
    row_block: int
    col_block: int
    keep: bool
    positives: _Positives | None  # to give positives weight 1 when weights are given


def _scaled(q: Tensor, inv_t: float) -> Tensor:
    """The queries times 1/t: scaling the (N, D) rows is cheaper than scaling (N, M) logits."""
    return q if inv_t == 1.0 else q * inv_t


def _blocks(total: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(total, start + size)) for start in range(0, total, size)]


class _RowLogSumExp(torch.autograd.Function):
    """lse_i = log sum_j w_ij exp(inv_t q_i.k_j) over the keys (then the extra keys), tile by
    tile: the denominator of InfoNCE. Forward returns (N,); -inf for a row with no key."""

    @staticmethod
    def forward(
        ctx: Any,
        spec: _LseSpec,
        q: Tensor,
        keys: Tensor | None,
        extra: Tensor | None,
        weights: Tensor | None,
    ) -> Tensor:
        with torch.autocast(q.device.type, enabled=False):
            total, shift, kept = _lse_forward(spec, q, keys, extra, weights)
        ctx.spec = spec
        # kept tiles go through save_for_backward so they are freed right after the backward
        ctx.kept_index = [(key, shift_t is not None) for key, (_, shift_t) in kept.items()]
        flat = [t for e, shift_t in kept.values() for t in (e, shift_t) if t is not None]
        ctx.save_for_backward(q, keys, extra, weights, total, shift, *flat)
        lse = total.log()  # -inf for a row without keys
        return lse if shift is None else lse + shift

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        q, keys, extra, weights, total, shift, *flat = ctx.saved_tensors
        kept: dict[tuple[int, ...], tuple[Tensor, Tensor | None]] = {}
        pos = 0
        for key, has_shift in ctx.kept_index:
            kept[key] = (flat[pos], flat[pos + 1] if has_shift else None)
            pos += 2 if has_shift else 1
        with torch.autocast(q.device.type, enabled=False):
            grads = _lse_backward(
                ctx.spec, kept, ctx.needs_input_grad, grad, q, keys, extra, weights, total, shift
            )
        return (None, *grads)


def _sources(
    spec: _LseSpec, q: Tensor, keys: Tensor | None, extra: Tensor | None
) -> list[tuple[int, Tensor, int, bool]]:
    """(index, key matrix, column offset in the weights, holds the queries' own keys)."""
    out: list[tuple[int, Tensor, int, bool]] = []
    first = q if spec.self_keys else keys
    assert first is not None
    if first.shape[0]:
        out.append((0, first, 0, spec.exclude_diag))
    if extra is not None and extra.shape[0]:
        out.append((1, extra, first.shape[0], False))
    return out


def _weight_tile(
    spec: _LseSpec, weights: Tensor, r0: int, r1: int, src: int, off: int, c0: int, c1: int
) -> tuple[Tensor, Tensor | None]:
    """Weights of a tile with positives forced to 1, and the positive mask (None: none there)."""
    w = weights[r0:r1, off + c0 : off + c1]
    if src != 0 or spec.positives is None:
        return w, None
    pos = spec.positives.tile(r0, r1, c0, c1)
    return torch.where(pos, w.new_ones(()), w), pos


def _lse_forward(
    spec: _LseSpec, q: Tensor, keys: Tensor | None, extra: Tensor | None, weights: Tensor | None
) -> tuple[Tensor, Tensor | None, dict[tuple[int, ...], tuple[Tensor, Tensor | None]]]:
    """Row sums of exp(logit - shift) (N,), the per-row shifts (N,; None when bounded: no
    shift), and the kept tiles."""
    n = q.shape[0]
    sources = _sources(spec, q, keys, extra)
    kept: dict[tuple[int, ...], tuple[Tensor, Tensor | None]] = {}
    qt = _scaled(q, spec.inv_t)
    if spec.mirror and n <= spec.row_block and len(sources) == 1:
        # one tile holds everything (small batches): no accumulation buffers
        e = (qt @ q.T).exp_()
        e.diagonal().zero_()
        if spec.keep:
            kept[(0, 0, 0)] = (e, None)
        return e.sum(1), None, kept
    total = q.new_zeros(n)
    shift = None if spec.bounded else q.new_zeros(n)
    if spec.mirror:
        t = spec.row_block
        parts = _blocks(n, t)
        for bi, (r0, r1) in enumerate(parts):
            for c0, c1 in parts[bi:]:
                e = (qt[r0:r1] @ q[c0:c1].T).exp_()
                if r0 == c0:
                    e.diagonal().zero_()
                total[r0:r1] += e.sum(1)
                if c0 != r0:
                    total[c0:c1] += e.sum(0)
                if spec.keep:
                    kept[(0, r0, c0)] = (e, None)
        sources = [s for s in sources if s[0] == 1]
    for r0, r1 in _blocks(n, spec.row_block):
        qr = qt[r0:r1]
        run_max = None if spec.bounded else q.new_full((r1 - r0,), float("-inf"))
        acc = total[r0:r1]
        for src, k, off, diag in sources:
            for c0, c1 in _blocks(k.shape[0], spec.col_block):
                s = qr @ k[c0:c1].T
                has_diag = diag and c0 < r1 and r0 < c1
                if spec.bounded:
                    e = s.exp_()
                    if has_diag:
                        e.diagonal(r0 - c0).zero_()
                    tile_shift = None
                else:
                    assert run_max is not None
                    if has_diag:
                        s.diagonal(r0 - c0).fill_(float("-inf"))
                    new_max = torch.maximum(run_max, s.amax(1))
                    tile_shift = torch.where(new_max > float("-inf"), new_max, 0.0)
                    acc.mul_(torch.exp(run_max - tile_shift))
                    run_max = new_max
                    e = s.sub_(tile_shift[:, None]).exp_()
                if weights is not None:
                    w, _ = _weight_tile(spec, weights, r0, r1, src, off, c0, c1)
                    acc += (e * w).sum(1)
                else:
                    acc += e.sum(1)
                if spec.keep:
                    kept[(src, r0, c0)] = (e, tile_shift)
        if run_max is not None:
            assert shift is not None
            shift[r0:r1] = torch.where(run_max > float("-inf"), run_max, 0.0)
    return total, shift, kept


def _lse_backward(
    spec: _LseSpec,
    kept: dict[tuple[int, ...], tuple[Tensor, Tensor | None]],
    needs: tuple[bool, ...],
    grad: Tensor,
    q: Tensor,
    keys: Tensor | None,
    extra: Tensor | None,
    weights: Tensor | None,
    total: Tensor,
    shift: Tensor | None,
) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """Gradients for (q, keys, extra, weights): d lse_i / d logit_ij = w_ij exp(logit_ij - lse_i)."""
    n, d = q.shape
    inv_t = spec.inv_t
    # a_i = g_i / total_i scales exp(logit - shift) into g_i * softmax; a row without keys has
    # total 0 and no positive, so its incoming gradient is 0 and the clamp keeps a_i = 0
    a = grad.to(q.dtype) / total.clamp_min(torch.finfo(q.dtype).tiny)
    sources = _sources(spec, q, keys, extra)
    if spec.mirror and n <= spec.row_block and len(sources) == 1:
        e = kept[(0, 0, 0)][0] if spec.keep else (_scaled(q, inv_t) @ q.T).exp_().fill_diagonal_(0.0)
        out = e @ torch.cat([q, a[:, None] * q], dim=1)
        gq1 = torch.addcmul(out[:, d:], a[:, None], out[:, :d]).mul_(inv_t)
        return gq1 if needs[1] else None, None, None, None
    gq = torch.zeros_like(q)
    gkeys = torch.zeros_like(keys) if keys is not None and needs[2] else None
    gextra = torch.zeros_like(extra) if extra is not None and needs[3] else None
    gw = torch.zeros_like(weights) if weights is not None and needs[4] else None
    qt = _scaled(q, inv_t)
    if spec.mirror:
        both = torch.cat([q, a[:, None] * q], dim=1)  # (N, 2D): E @ q and E @ (a q) in one GEMM
        out = torch.zeros_like(both)
        parts = _blocks(n, spec.row_block)
        for bi, (r0, r1) in enumerate(parts):
            for c0, c1 in parts[bi:]:
                if spec.keep:
                    e = kept[(0, r0, c0)][0]
                else:
                    e = (qt[r0:r1] @ q[c0:c1].T).exp_()
                    if r0 == c0:
                        e.diagonal().zero_()
                out[r0:r1] += e @ both[c0:c1]
                if c0 != r0:
                    out[c0:c1] += e.T @ both[r0:r1]
        gq += inv_t * (a[:, None] * out[:, :d] + out[:, d:])
        sources = [s for s in sources if s[0] == 1]
    for r0, r1 in _blocks(n, spec.row_block):
        qr, ar = q[r0:r1], a[r0:r1]
        aq = ar[:, None] * qr
        row_acc = torch.zeros_like(qr)
        for src, k, off, diag in sources:
            gk = (gq if spec.self_keys else gkeys) if src == 0 else gextra
            for c0, c1 in _blocks(k.shape[0], spec.col_block):
                scale = ar
                if spec.keep:
                    e, tile_shift = kept[(src, r0, c0)]
                    if tile_shift is not None:  # rescale from the shift of that tile to the final one
                        assert shift is not None
                        scale = ar * torch.exp(tile_shift - shift[r0:r1])
                        aq_t = scale[:, None] * qr
                    else:
                        aq_t = aq
                else:
                    s = qt[r0:r1] @ k[c0:c1].T
                    has_diag = diag and c0 < r1 and r0 < c1
                    if shift is not None:
                        s.sub_(shift[r0:r1, None])
                    e = s.exp_()
                    if has_diag:
                        e.diagonal(r0 - c0).zero_()
                    aq_t = aq
                ew = e
                if weights is not None:
                    w, pos = _weight_tile(spec, weights, r0, r1, src, off, c0, c1)
                    ew = e * w
                    if gw is not None:
                        g_tile = scale[:, None] * e
                        if pos is not None:
                            g_tile = g_tile.masked_fill(pos, 0.0)
                        gw[r0:r1, off + c0 : off + c1] = g_tile
                row_acc += scale[:, None] * (ew @ k[c0:c1])
                if gk is not None:
                    gk[c0:c1] += inv_t * (ew.T @ aq_t)
        gq[r0:r1] += inv_t * row_acc
    return gq if needs[1] else None, gkeys, gextra, gw


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
        block = max(1, AUTO_TILE_ELEMENTS // max(1, mask.shape[0]))
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


# ----------------------------------------------------------------------------- dense path


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


# ----------------------------------------------------------------------------- the kernel


def info_nce(
    queries: Tensor,
    keys: Tensor | None = None,
    *,
    positive_mask: Tensor | None = None,
    positive_index: Tensor | None = None,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    temperature: float | Tensor = 0.1,
    similarity: str = "cosine",
    negative_keys: Tensor | None = None,
    negative_weights: Tensor | None = None,
    reduction: str = "mean",
    chunk_size: int | str | None = "auto",
    negatives: NegativeSampling | None = None,
) -> Tensor:
    """InfoNCE / NT-Xent / SupCon loss of queries (N, D) against keys (M, D) (van den Oord 2018).

    Per anchor i with positive keys P_i (Khosla et al. 2020, "L_out"):
    ``-1/|P_i| * sum_{p in P_i} log( exp(s_ip/t) / sum_{a != i} w_ia exp(s_ia/t) )``;
    with one positive per anchor this is NT-Xent (Chen et al. 2020) / cross-entropy.

    - ``keys=None``: keys are the queries and each row's self-similarity is excluded from the
      positives and the denominator (SimCLR / SupCon).
    - Positives, give at most one of: ``positive_mask`` (N, M) bool; ``positive_index`` (N,)
      long, one positive key per query (-1 = none); ``labels`` (N,) with ``key_labels`` (M,)
      (key j is positive for query i when the labels are equal; ``key_labels`` defaults to
      ``labels`` when keys is None or M == N). With none given and M == N, key i is the
      positive of query i (MoCo / CLIP).
    - ``negative_keys`` (K, D): extra keys used only as negatives (e.g. a MoCo queue).
    - ``negative_weights`` (N, M+K) >= 0: multiply exp(s/t) of the negatives in the
      denominator (positives keep weight 1); a weight of 0 removes a negative.
    - ``negatives``: a :class:`~contrastkit.negatives.NegativeSampling` strategy (hard top-k,
      threshold, margin, hard-negative weighting, debiased, decoupled) with its schedule
      resolved (``strategy.at(progress)``); None or "uniform" is plain InfoNCE.
    - Anchors without a positive are left out of "mean" (and "sum") and are 0 under "none";
      if no anchor has one, "mean" is 0 (still connected to the graph).
    - ``temperature``: a float, or a 0-dim tensor (e.g. a learnable CLIP temperature, which
      then receives a gradient; its positivity is checked on CPU only).
    - ``chunk_size``: "auto" (default) keeps the logits for the backward while N x (M+K) is
      at most ``AUTO_KEEP_ELEMENTS`` and chunks above it; None never chunks; an integer chunks
      with blocks of that many keys. Chunked results are exact (equal to the unchunked ones up
      to float rounding) and extra memory is O(N x chunk): key blocks with an online
      log-sum-exp and recomputation in a custom backward for uniform negatives with cosine /
      dot similarity; blocks of ``chunk_size`` query rows under activation checkpointing for
      the negative strategies and for neg_euclidean (O(chunk x (M+K))).

    Logits and the softmax are computed in float32 (float64 if an input is float64) even for
    half / bfloat16 inputs. Positive indices are range-checked on CPU tensors only (no host
    sync on accelerators). Returns a scalar, or (N,) for reduction="none".
    """
    check_choice("reduction", reduction, REDUCTIONS)
    get_similarity(similarity)  # validates the name
    if isinstance(temperature, Tensor):
        if temperature.dim() != 0 or (temperature.device.type == "cpu" and not temperature > 0):
            raise UserError(f"temperature must be a 0-dim tensor > 0; got {temperature!r}")
    elif not isinstance(temperature, (int, float)) or not temperature > 0:
        raise UserError(f"temperature must be a number > 0; got {temperature!r}")
    if chunk_size is not None and chunk_size != "auto" and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise UserError(
            f"chunk_size must be a positive integer, 'auto' or None (no chunking); got {chunk_size!r}"
        )
    strategy: NegativeSampling | None = None
    if negatives is not None:
        if not isinstance(negatives, NegativeSampling):
            raise UserError(
                f"negatives must be a contrastkit.negatives.NegativeSampling or None; got {negatives!r}"
            )
        if not negatives.resolved:
            raise UserError(
                f"negatives has schedule {negatives.schedule!r} (warmup_fraction "
                f"{negatives.warmup_fraction}); pass negatives.at(progress) to info_nce"
            )
        if not negatives.is_uniform:
            strategy = negatives
    _check_2d("queries", queries)
    n, d = queries.shape
    self_keys = keys is None
    if keys is not None:
        _check_2d("keys", keys, d)
    if negative_keys is not None:
        _check_2d("negative_keys", negative_keys, d)
    m = n if keys is None else keys.shape[0]
    k_extra = 0 if negative_keys is None else negative_keys.shape[0]

    given = [
        name
        for name, value in (
            ("positive_mask", positive_mask),
            ("positive_index", positive_index),
            ("labels", labels),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise UserError(f"give at most one of positive_mask, positive_index, labels; got {given}")
    if key_labels is not None and labels is None:
        raise UserError("key_labels needs labels (the query labels) as well")
    if key_labels is not None and self_keys:
        raise UserError("key_labels applies only when keys are given (keys=None uses labels)")

    target: Tensor | None = None
    mask: Tensor | None = None
    q_labels: Tensor | None = None
    k_labels: Tensor | None = None
    every_row_has_positive = False  # known only for CPU positive_index / the default diagonal
    if positive_mask is not None:
        if _shape(positive_mask) != (n, m):
            raise UserError(
                f"positive_mask must have shape (N, M) = {(n, m)}; got {_shape(positive_mask)}"
            )
        mask = positive_mask if positive_mask.dtype == torch.bool else positive_mask != 0
    elif positive_index is not None:
        if _shape(positive_index) != (n,) or positive_index.is_floating_point():
            raise UserError(
                f"positive_index must be an integer tensor of shape (N,) = ({n},); "
                f"got {positive_index.dtype} {_shape(positive_index)}"
            )
        if positive_index.device.type == "cpu" and n:
            lo_t, hi_t = torch.aminmax(positive_index)
            lo, hi = int(lo_t), int(hi_t)
            every_row_has_positive = lo >= 0
            if hi >= m or lo < _IGNORE:
                raise UserError(
                    f"positive_index values must be in [-1, {m}) (number of keys {m}; "
                    f"-1 = no positive); got values in [{lo}, {hi}]"
                )
            if self_keys and bool((positive_index == torch.arange(n)).any()):
                raise UserError("with keys=None, positive_index must not point a row at itself")
        target = positive_index.long()
    elif labels is not None:
        if _shape(labels) != (n,):
            raise UserError(f"labels must have shape (N,) = ({n},); got {_shape(labels)}")
        if key_labels is None:
            if not self_keys and m != n:
                raise UserError(
                    f"key_labels (M,) = ({m},) is required when keys has a different number of "
                    f"rows ({m}) than queries ({n})"
                )
            key_labels = labels
        elif _shape(key_labels) != (m,):
            raise UserError(f"key_labels must have shape (M,) = ({m},); got {_shape(key_labels)}")
        if key_labels.dtype != labels.dtype:
            common_labels = torch.promote_types(labels.dtype, key_labels.dtype)
            labels, key_labels = labels.to(common_labels), key_labels.to(common_labels)
        target = _labels_to_index(labels, key_labels, self_keys) if n else None
        if target is None:
            q_labels, k_labels = labels, key_labels
    else:
        if self_keys or m != n:
            raise UserError(
                "info_nce needs positives: give positive_mask, positive_index or labels "
                f"(queries {_shape(queries)}, keys {None if keys is None else _shape(keys)})"
            )
        target = torch.arange(n, device=queries.device)
        every_row_has_positive = True

    if negative_weights is not None:
        if _shape(negative_weights) != (n, m + k_extra):
            raise UserError(
                f"negative_weights must have shape (N, M+K) = {(n, m + k_extra)}; "
                f"got {_shape(negative_weights)}"
            )
        if bool((negative_weights < 0).any()):
            raise UserError("negative_weights must be >= 0")

    valid: Tensor | None = None  # anchors with a positive; needed only for "mean"
    if reduction == "mean":
        if target is not None:
            valid = target != _IGNORE
        elif mask is not None:
            num_pos = mask.sum(1)
            if self_keys:
                num_pos = num_pos - mask.diagonal().long()
            valid = num_pos > 0
        else:
            assert q_labels is not None and k_labels is not None
            # number of keys sharing each query's label, from the sorted key labels
            sorted_k = torch.sort(k_labels).values
            hits = torch.searchsorted(sorted_k, q_labels, right=True) - torch.searchsorted(
                sorted_k, q_labels
            )
            valid = hits > (1 if self_keys else 0)

    tensors = [queries] + [t for t in (keys, negative_keys) if t is not None]
    dtype = _working_dtype(*tensors)
    q = queries.to(dtype)
    metric = similarity
    if similarity == "cosine":
        q = F.normalize(q, dim=1)
        metric = "dot"

    def prepared(t: Tensor) -> Tensor:
        t = t.to(dtype)
        return F.normalize(t, dim=1) if similarity == "cosine" else t

    k_pos = q if keys is None else prepared(keys)
    k_neg = None if negative_keys is None else prepared(negative_keys)
    weights = None if negative_weights is None else negative_weights.to(dtype)
    sum_rows = reduction != "none"

    if n == 0 or m + k_extra == 0:
        per_row = q.new_zeros(n) + 0.0 * q.sum()
        if sum_rows:
            per_row = per_row.sum()
    elif strategy is None and metric == "dot":
        per_row, reduced = _denominator_path(
            q, k_pos, k_neg, weights, _Positives(m, target, mask, q_labels, k_labels),
            temperature=temperature, bounded_sim=similarity == "cosine", self_keys=self_keys,
            chunk_size=chunk_size, mean=reduction == "mean" and every_row_has_positive,
        )
        if reduced:
            return per_row
        if sum_rows:
            per_row = per_row.sum()
    else:
        per_row = _dense_path(
            q, k_pos, k_neg, weights, target, mask, q_labels, k_labels,
            temperature=temperature, metric=metric, self_keys=self_keys, strategy=strategy,
            chunk_size=chunk_size, sum_rows=sum_rows,
        )

    if reduction != "mean":
        return per_row  # (N,) for "none" (0 where no positive), the total for "sum"
    assert valid is not None
    return per_row / valid.sum().clamp_min(1).to(per_row.dtype)


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
    keep_all = chunk_size is None or (chunk_size == "auto" and n * cols <= AUTO_KEEP_ELEMENTS)
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
    keep = chunk_size is None or (chunk_size == "auto" and elements <= AUTO_KEEP_ELEMENTS)
    if keep:
        tile = KEEP_MIRROR_TILE
        row_block, col_block = (tile, tile) if mirror else (n, max(m, k_extra, 1))
    elif isinstance(chunk_size, int):
        row_block, col_block = (chunk_size, chunk_size) if mirror else (n, chunk_size)
    else:
        if mirror:
            row_block = col_block = AUTO_MIRROR_TILE
        else:
            col_block = max(128, AUTO_TILE_ELEMENTS // n)
            row_block = min(n, max(1, AUTO_TILE_ELEMENTS // col_block))
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
    if chunk_size is None or (chunk_size == "auto" and n * cols <= AUTO_KEEP_ELEMENTS):
        step = n
    elif isinstance(chunk_size, int):
        step = chunk_size
    else:
        step = max(1, AUTO_TILE_ELEMENTS // cols)
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


class InfoNCELoss(nn.Module):
    """Module form of :func:`info_nce` (van den Oord et al. 2018, arXiv:1807.03748)."""

    def __init__(
        self,
        temperature: float = 0.1,
        similarity: str = "cosine",
        reduction: str = "mean",
        chunk_size: int | str | None = "auto",
        negatives: NegativeSampling | None = None,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise UserError(f"temperature must be > 0; got {temperature!r}")
        get_similarity(similarity)
        check_choice("reduction", reduction, REDUCTIONS)
        self.temperature = temperature
        self.similarity = similarity
        self.reduction = reduction
        self.chunk_size = chunk_size
        self.negatives = negatives

    def forward(
        self,
        queries: Tensor,
        keys: Tensor | None = None,
        *,
        positive_mask: Tensor | None = None,
        positive_index: Tensor | None = None,
        labels: Tensor | None = None,
        key_labels: Tensor | None = None,
        negative_keys: Tensor | None = None,
        negative_weights: Tensor | None = None,
    ) -> Tensor:
        return info_nce(
            queries,
            keys,
            positive_mask=positive_mask,
            positive_index=positive_index,
            labels=labels,
            key_labels=key_labels,
            temperature=self.temperature,
            similarity=self.similarity,
            negative_keys=negative_keys,
            negative_weights=negative_weights,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
            negatives=self.negatives,
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, similarity={self.similarity!r}"


class NTXentLoss(nn.Module):
    """NT-Xent over two views (SimCLR, Chen et al. 2020, arXiv:2002.05709).

    ``forward(z1, z2)`` with (N, D) each: the 2N rows are anchors, row i's positive is the
    other view of the same sample, the other 2N − 2 rows are negatives.
    """

    def __init__(
        self, temperature: float = 0.5, similarity: str = "cosine", reduction: str = "mean"
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise UserError(f"temperature must be > 0; got {temperature!r}")
        get_similarity(similarity)
        check_choice("reduction", reduction, REDUCTIONS)
        self.temperature = temperature
        self.similarity = similarity
        self.reduction = reduction

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        if z1.dim() != 2 or _shape(z1) != _shape(z2):
            raise UserError(
                f"NT-Xent needs two (N, D) views of equal shape; got {_shape(z1)} and {_shape(z2)}"
            )
        n = z1.shape[0]
        idx = torch.arange(2 * n, device=z1.device)
        return info_nce(
            torch.cat([z1, z2], dim=0),
            positive_index=(idx + n) % (2 * n),
            temperature=self.temperature,
            similarity=self.similarity,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, similarity={self.similarity!r}"


class SupConLoss(nn.Module):
    """Supervised contrastive loss, L_out form (Khosla et al. 2020, arXiv:2004.11362).

    ``forward(features, labels)``: features (N, V, D) (V views per sample) or (N, D); labels
    (N,). With (N, V, D) features and labels=None every sample is its own class (multi-view
    SimCLR). All N·V rows are anchors; positives are the other rows with the same label.
    """

    def __init__(
        self, temperature: float = 0.1, similarity: str = "cosine", reduction: str = "mean"
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise UserError(f"temperature must be > 0; got {temperature!r}")
        get_similarity(similarity)
        check_choice("reduction", reduction, REDUCTIONS)
        self.temperature = temperature
        self.similarity = similarity
        self.reduction = reduction

    def forward(self, features: Tensor, labels: Tensor | None = None) -> Tensor:
        if features.dim() == 2:
            if labels is None:
                raise UserError("SupConLoss with (N, D) features needs labels (N,)")
            flat, views = features, 1
        elif features.dim() == 3:
            views = features.shape[1]
            flat = features.transpose(0, 1).reshape(-1, features.shape[2])  # view-major
        else:
            raise UserError(f"features must be (N, V, D) or (N, D); got shape {_shape(features)}")
        n = features.shape[0]
        if labels is None:
            labels = torch.arange(n, device=features.device)
        elif _shape(labels) != (n,):
            raise UserError(f"labels must have shape (N,) = ({n},); got {_shape(labels)}")
        return info_nce(
            flat,
            labels=labels.repeat(views),
            temperature=self.temperature,
            similarity=self.similarity,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, similarity={self.similarity!r}"
