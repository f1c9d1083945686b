"""Pieces the InfoNCE paths share: the chunking budget, resolving the positives, small checks.

Used by :mod:`contrastkit.losses.info_nce` (the public kernel) and its two private paths,
:mod:`~contrastkit.losses._info_nce_tiled` (with :mod:`~contrastkit.losses._info_nce_lse`)
and :mod:`~contrastkit.losses._info_nce_dense`. The budgets below are read at call time, so
this is the module to set them on (``contrastkit.losses.info_nce`` only re-exports them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from contrastkit.errors import UserError

_IGNORE = -1  # positive_index value (and cross_entropy ignore_index) of an anchor without one

# "auto" chunking keeps the logits for the backward while rows x keys stays below this many
# elements (512 MiB in float32); above it, tiles are recomputed in the backward.
AUTO_KEEP_ELEMENTS = 1 << 27
# elements of one tile when the chunk is chosen automatically (64 MiB in float32)
AUTO_TILE_ELEMENTS = 1 << 24


def _keeps_logits(chunk_size: int | str | None, elements: int) -> bool:
    """Whether a problem of ``elements`` logits is computed unchunked (logits kept for the
    backward): always with chunk_size None, under "auto" up to ``AUTO_KEEP_ELEMENTS``."""
    return chunk_size is None or (chunk_size == "auto" and elements <= AUTO_KEEP_ELEMENTS)


def _auto_tile_side(other: int) -> int:
    """Length of an automatic tile (``AUTO_TILE_ELEMENTS``) whose other side is ``other``."""
    return max(1, AUTO_TILE_ELEMENTS // max(1, other))


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_2d(name: str, t: Tensor, width: int | None = None) -> None:
    if t.dim() != 2 or (width is not None and t.shape[1] != width):
        want = "(rows, D)" if width is None else f"(rows, {width})"
        raise UserError(f"{name} must be 2-D {want}; got shape {_shape(t)}")


def _labels_to_index(labels: Tensor, key_labels: Tensor, self_keys: bool) -> Tensor | None:
    """positive_index (N,) when every query has at most one positive key, else None.

    Costs a sort of the key labels and reads the result on the host (the caller uses it for CPU
    labels only); it lets the common one-positive case (SimCLR-style labels) take the
    single-positive paths.
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

    def has_positive(self, self_keys: bool) -> Tensor:
        """Boolean (N,): the queries with at least one positive key (never their own key)."""
        if self.target is not None:
            return self.target != _IGNORE
        if self.mask is not None:
            num_pos = self.mask.sum(1)
            if self_keys:
                num_pos = num_pos - self.mask.diagonal().long()
            return num_pos > 0
        assert self.q_labels is not None and self.k_labels is not None
        # number of keys sharing each query's label, from the sorted key labels
        sorted_k = torch.sort(self.k_labels).values
        hits = torch.searchsorted(sorted_k, self.q_labels, right=True) - torch.searchsorted(
            sorted_k, self.q_labels
        )
        return hits > (1 if self_keys else 0)


def _resolve_positives(
    queries: Tensor,
    keys: Tensor | None,
    *,
    positive_mask: Tensor | None,
    positive_index: Tensor | None,
    labels: Tensor | None,
    key_labels: Tensor | None,
    check_values: bool = True,
) -> tuple[_Positives, bool]:
    """The checked positives of :func:`~contrastkit.losses.info_nce.info_nce`, and whether
    every query is known to have one (known only for a checked CPU positive_index / the
    default diagonal). With ``check_values``, labels with at most one positive key per query
    become a positive_index (CPU labels only: it reads them on the host)."""
    n = queries.shape[0]
    self_keys = keys is None
    m = n if keys is None else keys.shape[0]
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
    every_row_has_positive = False
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
        if check_values and positive_index.device.type == "cpu" and n:
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
        elif not check_values:  # the caller vouches for its values: every query has a positive
            every_row_has_positive = True
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
        on_host = check_values and labels.device.type == "cpu"
        target = _labels_to_index(labels, key_labels, self_keys) if n and on_host else None
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
    return _Positives(m, target, mask, q_labels, k_labels), every_row_has_positive
