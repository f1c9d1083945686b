"""The one InfoNCE kernel and its thin module wrappers (NT-Xent, SupCon, generic InfoNCE).

InfoNCE: van den Oord et al. 2018, arXiv:1807.03748. NT-Xent (SimCLR): Chen et al. 2020,
arXiv:2002.05709. Supervised contrastive "L_out": Khosla et al. 2020, arXiv:2004.11362.
"""

from __future__ import annotations

import functools
from typing import overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from contrastkit.errors import UserError, check_choice
from contrastkit.similarity import get_similarity

REDUCTIONS = ("mean", "sum", "none")
_IGNORE = -1  # positive_index value (and cross_entropy ignore_index) of an anchor without one


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
    one-positive case (SimCLR-style labels) take the cross-entropy fast path.
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


def _row_losses(
    q: Tensor,
    keys: Tensor,
    weights: Tensor | None,
    target: Tensor | None,
    mask: Tensor | None,
    q_labels: Tensor | None,
    k_labels: Tensor | None,
    logit_scale: Tensor | None,
    *,
    inv_t: float,
    metric: str,
    num_pos_keys: int,
    self_offset: int | None,
    dtype: torch.dtype,
    sum_rows: bool,
) -> Tensor:
    """InfoNCE loss of each row of one block of queries (0 for rows without a positive),
    or their sum when sum_rows."""
    if metric == "dot":  # cosine arrives here pre-normalised; GEMM's alpha applies 1/t for free
        logits = torch.addmm(q.new_zeros(()), q, keys.T, beta=0, alpha=inv_t).to(dtype)
    else:
        logits = (get_similarity(metric)(q, keys) * inv_t).to(dtype)
        if logit_scale is not None:  # a tensor temperature: 1 / t
            logits = logits * logit_scale.to(dtype)
    if self_offset is not None:
        logits.diagonal(offset=self_offset).fill_(float("-inf"))
    m = num_pos_keys
    pos_mask: Tensor | None = None
    if target is None:
        if mask is not None:
            pos_mask = mask.clone() if self_offset is not None else mask
        else:
            assert q_labels is not None and k_labels is not None
            pos_mask = q_labels.unsqueeze(1) == k_labels.unsqueeze(0)
        if self_offset is not None:
            pos_mask.diagonal(offset=self_offset).fill_(False)
    if weights is not None:
        w = weights.to(dtype)
        log_w = w.clamp_min(torch.finfo(dtype).tiny).log().masked_fill(w <= 0, float("-inf"))
        if target is not None:  # positives keep weight 1
            log_w = log_w.scatter(1, target.clamp_min(0).unsqueeze(1), 0.0)
        else:
            assert pos_mask is not None
            log_w = torch.cat([log_w[:, :m].masked_fill(pos_mask, 0.0), log_w[:, m:]], dim=1)
        logits = logits + log_w
    if target is not None:
        reduce = "sum" if sum_rows else "none"
        return F.cross_entropy(logits, target, ignore_index=_IGNORE, reduction=reduce)
    assert pos_mask is not None
    log_prob = torch.log_softmax(logits, dim=1)[:, :m]
    pos_sum = torch.where(pos_mask, log_prob, log_prob.new_zeros(())).sum(1)
    rows = -pos_sum / pos_mask.sum(1).clamp_min(1).to(dtype)
    return rows.sum() if sum_rows else rows


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
    chunk_size: int | None = None,
) -> Tensor:
    """InfoNCE / NT-Xent / SupCon loss of queries (N, D) against keys (M, D) (van den Oord 2018).

    Per anchor i with positive keys P_i (Khosla et al. 2020, "L_out"):
    ``-1/|P_i| * sum_{p in P_i} log( exp(s_ip/t) / sum_{a != i} w_ia exp(s_ia/t) )``;
    with one positive per anchor this is NT-Xent (Chen et al. 2020) / cross-entropy.

    - ``keys=None``: keys are the queries and each row's self-similarity is excluded from the
      positives and the denominator (SimCLR / SupCon).
    - Positives, give at most one of: ``positive_mask`` (N, M) bool; ``positive_index`` (N,)
      long, one positive key per query (-1 = none; fastest path); ``labels`` (N,) with
      ``key_labels`` (M,) (key j is positive for query i when the labels are equal;
      ``key_labels`` defaults to ``labels`` when keys is None or M == N). With none given and
      M == N, key i is the positive of query i (MoCo / CLIP).
    - ``negative_keys`` (K, D): extra keys used only as negatives (e.g. a MoCo queue).
    - ``negative_weights`` (N, M+K) >= 0: multiply exp(s/t) of the negatives in the
      denominator (positives keep weight 1); for hard-negative weighting / debiasing.
    - Anchors without a positive are left out of "mean" (and "sum") and are 0 under "none";
      if no anchor has one, "mean" is 0 (still connected to the graph).
    - ``temperature``: a float, or a 0-dim tensor (e.g. a learnable CLIP temperature, which
      then receives a gradient; its positivity is checked on CPU only).
    - ``chunk_size``: compute the logits this many query rows at a time under activation
      checkpointing, so extra memory is O(chunk_size x (M+K)) instead of O(N x (M+K)).

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
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise UserError(f"chunk_size must be a positive integer or None; got {chunk_size!r}")
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
            lo, hi = int(positive_index.min()), int(positive_index.max())
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
    common = functools.reduce(torch.promote_types, [t.dtype for t in tensors])
    q = queries.to(common)
    metric = similarity
    if similarity == "cosine":
        q = F.normalize(q, dim=1)
        metric = "dot"
    if keys is None:
        k_pos = q
    else:
        k_pos = keys.to(common)
        if similarity == "cosine":
            k_pos = F.normalize(k_pos, dim=1)
    if negative_keys is not None:
        k_neg = negative_keys.to(common)
        if similarity == "cosine":
            k_neg = F.normalize(k_neg, dim=1)
        k_all = torch.cat([k_pos, k_neg], dim=0)
    else:
        k_all = k_pos
    inv_t = 1.0
    logit_scale: Tensor | None = None
    if not isinstance(temperature, Tensor):
        inv_t = 1.0 / float(temperature)
    elif metric == "dot":
        q = q * (1.0 / temperature).to(q.dtype)  # after the keys were taken from q
    else:
        logit_scale = 1.0 / temperature

    sum_rows = reduction != "none"
    if n == 0 or m + k_extra == 0:
        per_row = q.new_zeros(n, dtype=dtype) + 0.0 * q.sum().to(dtype)
        if sum_rows:
            per_row = per_row.sum()
    else:
        step = n if chunk_size is None else chunk_size
        pieces = []
        for start in range(0, n, step):
            stop = min(n, start + step)
            fn = functools.partial(
                _row_losses,
                inv_t=inv_t,
                metric=metric,
                num_pos_keys=m,
                self_offset=start if self_keys else None,
                dtype=dtype,
                sum_rows=sum_rows,
            )
            args = (
                _rows(q, start, stop),
                k_all,
                _rows(negative_weights, start, stop),
                _rows(target, start, stop),
                _rows(mask, start, stop),
                _rows(q_labels, start, stop),
                k_labels,
                logit_scale,
            )
            if step < n and torch.is_grad_enabled():
                pieces.append(checkpoint(fn, *args, use_reentrant=False))
            else:
                pieces.append(fn(*args))
        if len(pieces) == 1:
            per_row = pieces[0]
        else:
            per_row = torch.stack(pieces).sum() if sum_rows else torch.cat(pieces)

    if reduction != "mean":
        return per_row  # (N,) for "none" (0 where no positive), the total for "sum"
    assert valid is not None
    return per_row / valid.sum().clamp_min(1).to(per_row.dtype)


class InfoNCELoss(nn.Module):
    """Module form of :func:`info_nce` (van den Oord et al. 2018, arXiv:1807.03748)."""

    def __init__(
        self,
        temperature: float = 0.1,
        similarity: str = "cosine",
        reduction: str = "mean",
        chunk_size: int | None = None,
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
