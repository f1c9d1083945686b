"""The InfoNCE kernel against a naive per-anchor loop, closed forms, gradcheck, invariances
(chunking, its memory and its backward: test_info_nce_chunked.py)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TypeVar

import pytest
import torch
import torch.nn.functional as F

from contrastkit.errors import UserError
from contrastkit.losses import InfoNCELoss, NTXentLoss, SupConLoss, info_nce

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: a second thread only spins

SIMS = ["cosine", "dot", "neg_euclidean"]

R = TypeVar("R")


def largest_saved(run: Callable[[], R]) -> tuple[R, int]:
    """``run()``'s result and the numel of the largest tensor autograd saved while it ran."""
    sizes: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = run()
    return result, max(sizes)


def _sim(x: list[float], y: list[float], metric: str) -> float:
    dot = sum(p * q for p, q in zip(x, y, strict=True))
    if metric == "dot":
        return dot
    if metric == "cosine":
        return dot / math.sqrt(sum(p * p for p in x) * sum(q * q for q in y))
    return -math.sqrt(sum((p - q) ** 2 for p, q in zip(x, y, strict=True)))


def reference(
    queries: torch.Tensor,
    keys: torch.Tensor | None,
    positive: torch.Tensor,
    temperature: float,
    metric: str,
    negative_keys: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Per-anchor loop: -1/|P| sum_p log(exp(s_ip/t) / sum_{a != i} w_ia exp(s_ia/t))."""
    self_keys = keys is None
    k = queries if keys is None else keys
    all_keys = k if negative_keys is None else torch.cat([k, negative_keys])
    m = k.shape[0]
    losses, valid = [], []
    for i in range(queries.shape[0]):
        q = queries[i].tolist()
        sims = [_sim(q, all_keys[a].tolist(), metric) / temperature for a in range(len(all_keys))]
        pos = [p for p in range(m) if bool(positive[i, p]) and not (self_keys and p == i)]
        denom = 0.0
        for a, s in enumerate(sims):
            if self_keys and a == i:
                continue
            is_pos = a < m and bool(positive[i, a])
            w = 1.0 if (is_pos or weights is None) else float(weights[i, a])
            denom += w * math.exp(s)
        if pos:
            losses.append(-sum(sims[p] - math.log(denom) for p in pos) / len(pos))
            valid.append(True)
        else:
            losses.append(0.0)
            valid.append(False)
    out = torch.tensor(losses, dtype=torch.float64)
    if reduction == "none":
        return out
    if reduction == "sum":
        return out.sum()
    return out.sum() / max(1, sum(valid))


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("metric", SIMS)
def test_multi_positive_mask_with_keys(metric: str) -> None:
    torch.manual_seed(0)
    q, k = torch.randn(6, 4), torch.randn(9, 4)
    mask = torch.rand(6, 9) < 0.3
    mask[0] = False  # an anchor without positives
    mask[1, :3] = True
    for red in ("mean", "sum", "none"):
        got = info_nce(q, k, positive_mask=mask, temperature=0.3, similarity=metric, reduction=red)
        _close(got, reference(q, k, mask, 0.3, metric, reduction=red))


@pytest.mark.parametrize("metric", SIMS)
def test_supcon_labels_self_keys(metric: str) -> None:
    torch.manual_seed(1)
    z = torch.randn(10, 5)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])  # label 2 has no positive
    mask = labels[:, None] == labels[None, :]
    for red in ("mean", "sum", "none"):
        got = info_nce(z, labels=labels, temperature=0.2, similarity=metric, reduction=red)
        _close(got, reference(z, None, mask, 0.2, metric, reduction=red))
    # the same through an explicit mask (diagonal set: self must still be excluded)
    _close(
        info_nce(z, positive_mask=mask, temperature=0.2, similarity=metric),
        reference(z, None, mask, 0.2, metric),
    )


@pytest.mark.parametrize("self_keys", [True, False])
def test_one_positive_labels_take_fast_path_and_match(self_keys: bool) -> None:
    torch.manual_seed(2)
    n = 7
    if self_keys:
        z = torch.randn(2 * n, 3)
        labels = torch.arange(n).repeat(2)[torch.randperm(2 * n)]
        labels[0] = 100  # singleton: no positive
        keys, key_labels = None, None
        q = z
    else:
        q, keys = torch.randn(n, 3), torch.randn(n + 2, 3)
        labels = torch.tensor([4, 1, 9, 3, 0, 2, 8])
        key_labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8])  # unique: at most one positive
    mask = labels[:, None] == (labels if key_labels is None else key_labels)[None, :]
    for red in ("mean", "none"):
        got = info_nce(
            q, keys, labels=labels, key_labels=key_labels, temperature=0.5, reduction=red
        )
        _close(got, reference(q, keys, mask, 0.5, "cosine", reduction=red))


def test_positive_index_extra_negatives_and_weights() -> None:
    torch.manual_seed(3)
    q, k, neg = torch.randn(5, 4), torch.randn(5, 4), torch.randn(6, 4)
    index = torch.tensor([2, 0, 4, -1, 1])  # -1: no positive
    mask = torch.zeros(5, 5, dtype=torch.bool)
    for i, j in enumerate(index.tolist()):
        if j >= 0:
            mask[i, j] = True
    w = torch.rand(5, 11) * 2
    w[0, 3] = 0.0
    for metric in SIMS:
        for red in ("mean", "sum", "none"):
            loss = functools.partial(
                info_nce, temperature=0.25, similarity=metric, negative_keys=neg, reduction=red
            )
            want = reference(q, k, mask, 0.25, metric, neg, w, red)
            _close(loss(q, k, positive_index=index, negative_weights=w), want)
            _close(loss(q, k, positive_mask=mask, negative_weights=w), want)
    # multi-positive mask with extra negatives and weights in the self-keys setting
    z = torch.randn(6, 4)
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    wz = torch.rand(6, 12)
    m = labels[:, None] == labels[None, :]
    got = info_nce(z, labels=labels, negative_keys=neg, negative_weights=wz, temperature=0.4)
    _close(got, reference(z, None, m, 0.4, "cosine", neg, wz))


def test_default_positives_are_the_diagonal_when_keys_given() -> None:
    torch.manual_seed(4)
    q, k = torch.randn(5, 3), torch.randn(5, 3)
    got = info_nce(q, k, temperature=0.1)
    _close(got, reference(q, k, torch.eye(5, dtype=torch.bool), 0.1, "cosine"))
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / 0.1
    torch.testing.assert_close(got, F.cross_entropy(logits, torch.arange(5)))


def test_ntxent_closed_form_identical_embeddings() -> None:
    for n in (1, 3, 8):
        z = torch.ones(n, 4)
        got = NTXentLoss(temperature=0.5)(z, z.clone())
        torch.testing.assert_close(got, torch.tensor(math.log(2 * n - 1)))


def test_ntxent_matches_cross_entropy_formulation_and_supcon_views() -> None:
    torch.manual_seed(5)
    z1, z2 = torch.randn(8, 6), torch.randn(8, 6)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / 0.3
    logits.fill_diagonal_(float("-inf"))
    target = (torch.arange(16) + 8) % 16
    want = F.cross_entropy(logits, target)
    torch.testing.assert_close(NTXentLoss(0.3)(z1, z2), want)
    # SupCon with instance labels over (N, 2, D) views is NT-Xent
    torch.testing.assert_close(SupConLoss(0.3)(torch.stack([z1, z2], dim=1)), want)
    labels = torch.arange(8)
    torch.testing.assert_close(SupConLoss(0.3)(torch.stack([z1, z2], dim=1), labels), want)


def test_supcon_module_multi_view_matches_reference() -> None:
    torch.manual_seed(6)
    feats = torch.randn(4, 3, 5)  # N=4 samples, V=3 views
    labels = torch.tensor([1, 0, 1, 2])
    flat = feats.transpose(0, 1).reshape(12, 5)
    flat_labels = labels.repeat(3)
    mask = flat_labels[:, None] == flat_labels[None, :]
    _close(SupConLoss(0.1)(feats, labels), reference(flat, None, mask, 0.1, "cosine"))
    _close(SupConLoss(0.1)(flat, flat_labels), reference(flat, None, mask, 0.1, "cosine"))


def test_infonce_module_wraps_function() -> None:
    torch.manual_seed(7)
    q, k, neg = torch.randn(4, 3), torch.randn(4, 3), torch.randn(5, 3)
    mod = InfoNCELoss(temperature=0.2, similarity="dot")
    want = info_nce(q, k, temperature=0.2, similarity="dot", negative_keys=neg)
    torch.testing.assert_close(mod(q, k, negative_keys=neg), want)


def test_gradcheck_float64() -> None:
    torch.manual_seed(8)
    q = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    neg = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(4, 7, dtype=torch.float64) + 0.1).requires_grad_()
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)

    def f_mask(
        q_: torch.Tensor, k_: torch.Tensor, n_: torch.Tensor, w_: torch.Tensor
    ) -> torch.Tensor:
        return info_nce(
            q_, k_, positive_mask=mask, negative_keys=n_, negative_weights=w_, temperature=0.5
        )

    def f_index(
        q_: torch.Tensor, k_: torch.Tensor, n_: torch.Tensor, w_: torch.Tensor
    ) -> torch.Tensor:
        return info_nce(
            q_,
            k_,
            negative_keys=n_,
            negative_weights=w_,
            temperature=0.5,
            similarity="neg_euclidean",
        )

    assert torch.autograd.gradcheck(f_mask, (q, k, neg, w))
    assert torch.autograd.gradcheck(f_index, (q, k, neg, w))  # the chunked backward: test_info_nce_chunked


def test_invariances() -> None:
    torch.manual_seed(10)
    q, k = torch.randn(6, 5), torch.randn(8, 5)
    mask = torch.rand(6, 8) < 0.4
    mask[:, 0] = True
    base = info_nce(q, k, positive_mask=mask)
    # cosine ignores the scale of each row
    scaled = info_nce(q * torch.rand(6, 1) * 5 + 0 * q, k * 3.0, positive_mask=mask)
    torch.testing.assert_close(scaled, base)
    # permuting the keys together with the mask columns changes nothing
    perm = torch.randperm(8)
    torch.testing.assert_close(info_nce(q, k[perm], positive_mask=mask[:, perm]), base)
    # unit weights are no weights
    torch.testing.assert_close(
        info_nce(q, k, positive_mask=mask, negative_weights=torch.ones(6, 8)), base
    )
    # zero weight on every negative with one positive each: each term is log 1 = 0
    one = torch.zeros(6, 8, dtype=torch.bool)
    one[:, 0] = True
    zero_w = info_nce(q, k, positive_mask=one, negative_weights=torch.zeros(6, 8))
    torch.testing.assert_close(zero_w, torch.tensor(0.0))
    # a negative key equal to a positive key adds exactly one more equal term: log 2 for dot
    z = torch.ones(1, 3)
    got = info_nce(z, z.clone(), negative_keys=z.clone(), similarity="dot")
    torch.testing.assert_close(got, torch.tensor(math.log(2.0)))


def test_no_positive_anywhere_is_zero_and_differentiable() -> None:
    z = torch.randn(4, 3, requires_grad=True)
    loss = info_nce(z, labels=torch.arange(4))
    assert loss.item() == 0.0
    loss.backward()
    assert z.grad is not None and torch.all(z.grad == 0)


def test_low_precision_inputs_accumulate_in_float32() -> None:
    torch.manual_seed(11)
    z1, z2 = torch.randn(16, 8), torch.randn(16, 8)
    ref = NTXentLoss(0.1)(z1, z2)
    for dt in (torch.bfloat16, torch.float16):
        got = NTXentLoss(0.1)(z1.to(dt), z2.to(dt))
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, ref, atol=3e-2, rtol=1e-2)


def test_bad_inputs_raise_user_error() -> None:
    q, k = torch.randn(4, 3), torch.randn(5, 3)
    with pytest.raises(UserError, match=r"temperature.*0"):
        info_nce(q, k, positive_index=torch.zeros(4, dtype=torch.long), temperature=0.0)
    with pytest.raises(UserError, match=r"temperature.*-1"):
        NTXentLoss(temperature=-1)
    with pytest.raises(UserError, match=r"keys.*\(rows, 3\).*\(5, 2\)"):
        info_nce(q, torch.randn(5, 2), positive_index=torch.zeros(4, dtype=torch.long))
    with pytest.raises(UserError, match=r"positive_mask.*\(4, 5\).*\(4, 4\)"):
        info_nce(q, k, positive_mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(UserError, match=r"at most one"):
        info_nce(q, labels=torch.zeros(4), positive_index=torch.zeros(4, dtype=torch.long))
    with pytest.raises(UserError, match=r"needs positives"):
        info_nce(q)
    with pytest.raises(UserError, match=r"key_labels"):
        info_nce(q, k, labels=torch.zeros(4))
    with pytest.raises(UserError, match=r"unknown similarity 'cos'"):
        info_nce(q, k, positive_index=torch.zeros(4, dtype=torch.long), similarity="cos")
    with pytest.raises(UserError, match=r"unknown reduction 'avg'"):
        info_nce(q, k, positive_index=torch.zeros(4, dtype=torch.long), reduction="avg")
    with pytest.raises(UserError, match=r"negative_weights.*\(4, 5\).*\(4, 3\)"):
        info_nce(
            q, k, positive_index=torch.zeros(4, dtype=torch.long), negative_weights=torch.ones(4, 3)
        )
    with pytest.raises(UserError, match=r">= 0"):
        info_nce(
            q,
            k,
            positive_index=torch.zeros(4, dtype=torch.long),
            negative_weights=-torch.ones(4, 5),
        )
    with pytest.raises(UserError, match=r"in \[-1, 5\).*got values in \[5, 5\]"):
        info_nce(q, k, positive_index=torch.full((4,), 5))
    with pytest.raises(UserError, match=r"got values in \[-3, 0\]"):
        info_nce(q, k, positive_index=torch.tensor([0, -3, 0, 0]))
    with pytest.raises(UserError, match=r"itself"):
        info_nce(q, positive_index=torch.tensor([1, 1, 2, 3]))
    with pytest.raises(UserError, match=r"two \(N, D\) views.*\(4, 3\).*\(5, 3\)"):
        NTXentLoss()(q, k)


def test_label_fast_path_finds_the_single_positive() -> None:
    from contrastkit.losses.info_nce import _labels_to_index

    labels = torch.tensor([5, 7, 9, 7, 5, 1])  # 9 and 1 are singletons
    torch.testing.assert_close(
        _labels_to_index(labels, labels, True), torch.tensor([4, 3, -1, 1, 0, -1])
    )
    assert _labels_to_index(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 0, 1]), True) is None
    keys = torch.tensor([3, 8, 5])
    torch.testing.assert_close(
        _labels_to_index(torch.tensor([5, 4, 3]), keys, False), torch.tensor([2, -1, 0])
    )
    assert _labels_to_index(torch.tensor([5]), torch.tensor([5, 5]), False) is None


@pytest.mark.parametrize("metric", SIMS)
def test_tensor_temperature_matches_float_and_gets_a_gradient(metric: str) -> None:
    torch.manual_seed(13)
    q, k = torch.randn(5, 4), torch.randn(5, 4)
    t = torch.tensor(0.3, requires_grad=True)
    for chunk in (None, 2):
        got = info_nce(q, k, temperature=t, similarity=metric, chunk_size=chunk)
        torch.testing.assert_close(got, info_nce(q, k, temperature=0.3, similarity=metric))
        (grad,) = torch.autograd.grad(got, t)
        eps = 1e-3
        up = info_nce(q, k, temperature=0.3 + eps, similarity=metric)
        down = info_nce(q, k, temperature=0.3 - eps, similarity=metric)
        torch.testing.assert_close(grad, (up - down) / (2 * eps), atol=2e-3, rtol=2e-3)
    z = torch.randn(6, 4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    torch.testing.assert_close(
        info_nce(z, labels=labels, temperature=torch.tensor(0.2), similarity=metric),
        info_nce(z, labels=labels, temperature=0.2, similarity=metric),
    )
    with pytest.raises(UserError, match="0-dim tensor > 0"):
        info_nce(q, k, temperature=torch.tensor(-0.1))


def test_empty_batch_and_key_labels_without_keys() -> None:
    empty = torch.zeros(0, 3, requires_grad=True)
    assert info_nce(empty, labels=torch.zeros(0)).item() == 0.0
    assert info_nce(empty, positive_index=torch.zeros(0, dtype=torch.long)).item() == 0.0
    with pytest.raises(UserError, match="key_labels applies only"):
        info_nce(torch.randn(3, 2), labels=torch.zeros(3), key_labels=torch.zeros(3))
