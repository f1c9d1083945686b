"""The row log-sum-exp of InfoNCE's denominator as a custom autograd function over key tiles.

:class:`_RowLogSumExp` computes lse_i = log sum_j w_ij exp(inv_t q_i.k_j) tile by tile. It
keeps the exp-logit tiles for the backward (with keys = queries, only the upper triangle of
the symmetric logits) or keeps nothing of size rows x keys and recomputes each tile in the
backward. Used by the denominator path, :mod:`contrastkit.losses._info_nce_tiled`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from contrastkit.losses._info_nce_common import _Positives


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
