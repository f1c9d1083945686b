"""The one InfoNCE kernel and its thin module wrappers (NT-Xent, SupCon, generic InfoNCE).

InfoNCE: van den Oord et al. 2018, arXiv:1807.03748. NT-Xent (SimCLR): Chen et al. 2020,
arXiv:2002.05709. Supervised contrastive "L_out": Khosla et al. 2020, arXiv:2004.11362.
Negative strategies (contrastkit.negatives.mining): hard-negative weighting (Robinson et al.
2021, arXiv:2010.04592), debiasing (Chuang et al. 2020, arXiv:2007.00224), decoupling (Yeh et
al. 2022, arXiv:2110.06848).

This module checks the arguments, resolves the positives and dispatches to one of two exact
paths, each in a private module:

- the **denominator path** (uniform negatives, dot / cosine similarity;
  ``_info_nce_tiled.py``, with its custom autograd function in ``_info_nce_lse.py``): each
  row's log-sum-exp over the keys is computed tile by tile. Unchunked it keeps the exp-logit
  tiles for the backward (no softmax or one-hot passes, and with keys = queries only the
  upper triangle of the symmetric logits is computed); chunked it keeps nothing of size
  rows x keys and recomputes each tile in the backward, so extra memory is one tile. The
  positive term is O(rows x D) (a gather, per-class key sums, or a blocked mask product).
- the **dense path** (any negative strategy, negative-Euclidean similarity;
  ``_info_nce_dense.py``): the logits of a block of query rows with autograd, chunked over
  query rows under activation checkpointing (every strategy is row-local, so chunking stays
  exact).

Default temperatures, one per paper: :func:`info_nce` and :class:`InfoNCELoss` 0.07 (MoCo,
He et al. 2020, arXiv:1911.05722, the InfoNCE of its Eq. 1); :class:`NTXentLoss` 0.5 (SimCLR's
CIFAR-10 setting, Chen et al. 2020, Appendix B.9; its ImageNet runs use 0.1);
:class:`SupConLoss` 0.1 (Khosla et al. 2020, Section 4). The methods keep their own defaults
(``method.temperature``), so recipes do not depend on these.

``gather_distributed=True`` (as lightly's losses): under torch.distributed each process
contrasts its own queries with the keys of every process, gathered with
:func:`contrastkit.negatives.gather_with_grad` so that gradients flow back to the process that
owns each key; with DistributedDataParallel's averaging of gradients this is the loss of the
global batch. Without an initialised process group, or with one process, it changes nothing.

What they share (the "auto" chunking budget ``AUTO_KEEP_ELEMENTS``, resolving the positives)
is in ``_info_nce_common.py``; the budget is re-exported here, but read (and so tuned) there.
"""

from __future__ import annotations

from typing import TypedDict, Unpack

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.errors import UserError, check_choice
from contrastkit.losses._info_nce_common import AUTO_KEEP_ELEMENTS as AUTO_KEEP_ELEMENTS
from contrastkit.losses._info_nce_common import _check_2d, _resolve_positives, _shape
from contrastkit.losses._info_nce_common import _labels_to_index as _labels_to_index
from contrastkit.losses._info_nce_dense import _dense_path
from contrastkit.losses._info_nce_tiled import _denominator_path
from contrastkit.negatives.distributed import gather_no_grad, gather_with_grad, world
from contrastkit.negatives.mining import NegativeSampling
from contrastkit.similarity import get_similarity

REDUCTIONS = ("mean", "sum", "none")


class InfoNCEInputs(TypedDict, total=False):
    """The keyword inputs of :meth:`InfoNCELoss.forward`, passed on to :func:`info_nce`
    (all optional; see there)."""

    positive_mask: Tensor | None
    positive_index: Tensor | None
    labels: Tensor | None
    key_labels: Tensor | None
    negative_keys: Tensor | None
    negative_weights: Tensor | None


def _working_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half / bfloat16 accumulate in float32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _check_options(
    reduction: str,
    similarity: str,
    temperature: float | Tensor,
    chunk_size: int | str | None,
    negatives: NegativeSampling | None,
    check_values: bool = True,
) -> NegativeSampling | None:
    """Checks the options of :func:`info_nce`; returns the negative strategy (None: uniform)."""
    check_choice("reduction", reduction, REDUCTIONS)
    get_similarity(similarity)  # validates the name
    if isinstance(temperature, Tensor):
        if temperature.dim() != 0 or (check_values and temperature.device.type == "cpu" and not temperature > 0):
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
    return strategy


def info_nce(
    queries: Tensor,
    keys: Tensor | None = None,
    *,
    positive_mask: Tensor | None = None,
    positive_index: Tensor | None = None,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    temperature: float | Tensor = 0.07,
    similarity: str = "cosine",
    negative_keys: Tensor | None = None,
    negative_weights: Tensor | None = None,
    reduction: str = "mean",
    chunk_size: int | str | None = "auto",
    negatives: NegativeSampling | None = None,
    check_values: bool = True,
    gather_distributed: bool = False,
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
      then receives a gradient; its positivity is checked on CPU only). Default 0.07, MoCo's
      value (He et al. 2020, arXiv:1911.05722).
    - ``gather_distributed``: under torch.distributed, contrast this process's queries with
      the keys of every process (``keys``, or the queries when keys is None), gathered with
      gradient; positives are given as for the local keys and are re-indexed into the global
      batch (``positive_index`` + rank x M, ``key_labels`` gathered: labels must then be
      unique across processes for instance discrimination). ``negative_keys`` are used as
      given on each process (a MoCo queue is the same everywhere); ``negative_weights`` cannot
      be combined with it. Every process must pass the same number of rows. "mean" is over this
      process's queries: averaged over processes (DDP) it is the global mean when every process
      has as many queries with a positive. No-op without torch.distributed or with one process.
    - ``chunk_size``: "auto" (default) keeps the logits for the backward while N x (M+K) is
      at most ``AUTO_KEEP_ELEMENTS`` and chunks above it; None never chunks; an integer chunks
      with blocks of that many keys. Chunked results are exact (equal to the unchunked ones up
      to float rounding) and extra memory is O(N x chunk): key blocks with an online
      log-sum-exp and recomputation in a custom backward for uniform negatives with cosine /
      dot similarity; blocks of ``chunk_size`` query rows under activation checkpointing for
      the negative strategies and for neg_euclidean (O(chunk x (M+K))).

    Logits and the softmax are computed in float32 (float64 if an input is float64) even for
    half / bfloat16 inputs. Returns a scalar, or (N,) for reduction="none".

    ``check_values``: check the values of ``positive_index``, ``negative_weights`` and a tensor
    ``temperature``, and turn ``labels`` with at most one positive per query into a positive
    index (a faster path) — on CPU tensors only, since both read values on the host. False:
    the caller vouches for its inputs (``positive_index`` in [0, M): every query has a
    positive) and nothing reads a tensor's values on the host, on any device: the methods'
    training steps never wait for the device.
    """
    strategy = _check_options(reduction, similarity, temperature, chunk_size, negatives, check_values)
    _check_2d("queries", queries)
    if gather_distributed and world()[1] > 1:
        given = InfoNCEInputs(positive_mask=positive_mask, positive_index=positive_index, labels=labels,
                              key_labels=key_labels, negative_keys=negative_keys, negative_weights=negative_weights)
        keys, gathered = _gather_across_ranks(queries, keys, given, check_values)
        return info_nce(queries, keys, **gathered, temperature=temperature, similarity=similarity, reduction=reduction,
                        chunk_size=chunk_size, negatives=negatives, check_values=check_values)
    n, d = queries.shape
    self_keys = keys is None
    if keys is not None:
        _check_2d("keys", keys, d)
    if negative_keys is not None:
        _check_2d("negative_keys", negative_keys, d)
    m = n if keys is None else keys.shape[0]
    k_extra = 0 if negative_keys is None else negative_keys.shape[0]
    positives, every_row_has_positive = _resolve_positives(
        queries,
        keys,
        positive_mask=positive_mask,
        positive_index=positive_index,
        labels=labels,
        key_labels=key_labels,
        check_values=check_values,
    )
    if negative_weights is not None:
        if _shape(negative_weights) != (n, m + k_extra):
            raise UserError(
                f"negative_weights must have shape (N, M+K) = {(n, m + k_extra)}; "
                f"got {_shape(negative_weights)}"
            )
        if check_values and negative_weights.device.type == "cpu" and bool((negative_weights < 0).any()):
            raise UserError("negative_weights must be >= 0")

    # anchors with a positive; needed only for "mean"
    valid = positives.has_positive(self_keys) if reduction == "mean" else None

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
            q, k_pos, k_neg, weights, positives,
            temperature=temperature, bounded_sim=similarity == "cosine", self_keys=self_keys,
            chunk_size=chunk_size, mean=reduction == "mean" and every_row_has_positive,
        )
        if reduced:
            return per_row
        if sum_rows:
            per_row = per_row.sum()
    else:
        per_row = _dense_path(
            q, k_pos, k_neg, weights,
            positives.target, positives.mask, positives.q_labels, positives.k_labels,
            temperature=temperature, metric=metric, self_keys=self_keys, strategy=strategy,
            chunk_size=chunk_size, sum_rows=sum_rows,
        )

    if reduction != "mean":
        return per_row  # (N,) for "none" (0 where no positive), the total for "sum"
    assert valid is not None
    return per_row / valid.sum().clamp_min(1).to(per_row.dtype)


def _gather_across_ranks(
    queries: Tensor, keys: Tensor | None, inputs: InfoNCEInputs, check_values: bool
) -> tuple[Tensor, InfoNCEInputs]:
    """The keys of every rank (gathered with gradient, in rank order) and :func:`info_nce`'s
    inputs re-indexed into them: this rank's M keys are columns rank·M … rank·M + M − 1. With
    keys=None a row's own key is left out of its positives (mask) and its denominator (weight 0)."""
    if inputs.get("negative_weights") is not None:
        raise UserError(
            "negative_weights cannot be combined with gather_distributed=True (its columns name this "
            "process's keys only); pass negatives=NegativeSampling(...) or gather the keys yourself"
        )
    n, self_keys = queries.shape[0], keys is None
    local = queries if keys is None else keys
    _check_2d("keys", local, queries.shape[1])
    positive_mask, positive_index = inputs.get("positive_mask"), inputs.get("positive_index")
    labels, key_labels = inputs.get("labels"), inputs.get("key_labels")
    # the local inputs are checked as they are given (shapes, index range, one kind of positives)
    _resolve_positives(
        queries, keys, positive_mask=positive_mask, positive_index=positive_index, labels=labels,
        key_labels=key_labels, check_values=check_values,
    )
    rank, size = world()
    m = local.shape[0]
    offset = rank * m
    all_keys = gather_with_grad(local)
    rows = torch.arange(n, device=queries.device)
    out = InfoNCEInputs(negative_keys=inputs.get("negative_keys"))
    mask: Tensor | None = None
    if positive_mask is not None:
        mask = torch.zeros(n, m * size, dtype=torch.bool, device=queries.device)
        mask[:, offset : offset + m] = positive_mask if positive_mask.dtype == torch.bool else positive_mask != 0
    elif positive_index is not None:
        index = positive_index.long()
        out["positive_index"] = torch.where(index >= 0, index + offset, index)
    elif labels is not None:
        all_labels = gather_no_grad(labels if key_labels is None else key_labels)
        if self_keys:
            mask = labels[:, None] == all_labels[None, :]
        else:
            out["labels"], out["key_labels"] = labels, all_labels
    else:  # key i is the positive of query i
        out["positive_index"] = rows + offset
    if self_keys:
        own = rows + offset
        if mask is not None:
            mask[rows, own] = False
        extra = inputs.get("negative_keys")
        weights = torch.ones(n, m * size + (0 if extra is None else extra.shape[0]), device=queries.device)
        weights[rows, own] = 0.0
        out["negative_weights"] = weights
    if mask is not None:
        out["positive_mask"] = mask
    return all_keys, out


class _InfoNCEModule(nn.Module):
    """Base of the module wrappers: checks and holds temperature, similarity, reduction and
    gather_distributed."""

    def __init__(self, temperature: float, similarity: str, reduction: str, gather_distributed: bool = False) -> None:
        super().__init__()
        if not temperature > 0:
            raise UserError(f"temperature must be > 0; got {temperature!r}")
        get_similarity(similarity)
        check_choice("reduction", reduction, REDUCTIONS)
        if not isinstance(gather_distributed, bool):
            raise UserError(f"gather_distributed must be True or False; got {gather_distributed!r}")
        self.temperature = temperature
        self.similarity = similarity
        self.reduction = reduction
        self.gather_distributed = gather_distributed

    def _info_nce(
        self,
        queries: Tensor,
        keys: Tensor | None = None,
        *,
        chunk_size: int | str | None = "auto",
        negatives: NegativeSampling | None = None,
        **inputs: Unpack[InfoNCEInputs],
    ) -> Tensor:
        """:func:`info_nce` with this module's temperature, similarity, reduction and gathering."""
        return info_nce(
            queries,
            keys,
            **inputs,
            temperature=self.temperature,
            similarity=self.similarity,
            reduction=self.reduction,
            chunk_size=chunk_size,
            negatives=negatives,
            gather_distributed=self.gather_distributed,
        )

    def extra_repr(self) -> str:
        gather = ", gather_distributed=True" if self.gather_distributed else ""
        return f"temperature={self.temperature}, similarity={self.similarity!r}{gather}"


class InfoNCELoss(_InfoNCEModule):
    """Module form of :func:`info_nce` (van den Oord et al. 2018, arXiv:1807.03748).

    ``temperature`` defaults to 0.07, MoCo's value (He et al. 2020, arXiv:1911.05722).
    ``gather_distributed=True``: under torch.distributed the queries of each process are
    contrasted with the keys of every process (see :func:`info_nce`).

    Example::

        loss_fn = InfoNCELoss(temperature=0.07)
        q, k = torch.randn(8, 16), torch.randn(8, 16)
        loss = loss_fn(q, k)  # key i is the positive of query i, the other keys are negatives
    """

    def __init__(
        self,
        temperature: float = 0.07,
        similarity: str = "cosine",
        reduction: str = "mean",
        chunk_size: int | str | None = "auto",
        negatives: NegativeSampling | None = None,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__(temperature, similarity, reduction, gather_distributed)
        self.chunk_size = chunk_size
        self.negatives = negatives

    def forward(
        self, queries: Tensor, keys: Tensor | None = None, **inputs: Unpack[InfoNCEInputs]
    ) -> Tensor:
        return self._info_nce(
            queries, keys, chunk_size=self.chunk_size, negatives=self.negatives, **inputs
        )


class NTXentLoss(_InfoNCEModule):
    """NT-Xent over two views (SimCLR, Chen et al. 2020, arXiv:2002.05709).

    ``forward(z1, z2)`` with (N, D) each: the 2N rows are anchors, row i's positive is the
    other view of the same sample, the other 2N − 2 rows are negatives. ``temperature``
    defaults to 0.5, the paper's CIFAR-10 value (Appendix B.9; its ImageNet runs use 0.1).
    ``gather_distributed=True``: under torch.distributed the negatives are the rows of every
    process (lightly's ``NTXentLoss(gather_distributed=True)``).

    Example::

        z1, z2 = torch.randn(8, 32), torch.randn(8, 32)  # projections of two views
        loss = NTXentLoss(temperature=0.5)(z1, z2)
    """

    def __init__(
        self, temperature: float = 0.5, similarity: str = "cosine", reduction: str = "mean", gather_distributed: bool = False
    ) -> None:
        super().__init__(temperature, similarity, reduction, gather_distributed)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        if z1.dim() != 2 or _shape(z1) != _shape(z2):
            raise UserError(
                f"NT-Xent needs two (N, D) views of equal shape; got {_shape(z1)} and {_shape(z2)}"
            )
        n = z1.shape[0]
        idx = torch.arange(2 * n, device=z1.device)
        return self._info_nce(torch.cat([z1, z2], dim=0), positive_index=(idx + n) % (2 * n))


class SupConLoss(_InfoNCEModule):
    """Supervised contrastive loss, L_out form (Khosla et al. 2020, arXiv:2004.11362).

    ``forward(features, labels)``: features (N, V, D) (V views per sample) or (N, D); labels
    (N,). With (N, V, D) features and labels=None every sample is its own class (multi-view
    SimCLR). All N·V rows are anchors; positives are the other rows with the same label.
    ``temperature`` defaults to 0.1, the paper's value (Section 4). ``gather_distributed=True``:
    under torch.distributed the positives and negatives are the rows of every process (class
    labels are compared across processes; without labels each sample stays its own class).

    Example::

        features = torch.randn(8, 2, 32)  # 8 samples, 2 views each
        labels = torch.tensor([0, 1, 0, 2, 1, 3, 3, 2])
        loss = SupConLoss(temperature=0.1)(features, labels)
    """

    def __init__(
        self, temperature: float = 0.1, similarity: str = "cosine", reduction: str = "mean", gather_distributed: bool = False
    ) -> None:
        super().__init__(temperature, similarity, reduction, gather_distributed)

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
        if labels is None:  # every sample its own class: ids unique across processes
            rank = world()[0] if self.gather_distributed else 0
            labels = torch.arange(n, device=features.device) + rank * n
        elif _shape(labels) != (n,):
            raise UserError(f"labels must have shape (N,) = ({n},); got {_shape(labels)}")
        return self._info_nce(flat, labels=labels.repeat(views))
