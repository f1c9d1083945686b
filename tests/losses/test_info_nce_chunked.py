"""Chunked InfoNCE (key blocks, online log-sum-exp, recomputing custom backward) equals the
unchunked kernel and the naive loop, for every way of giving positives, queues and weights."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from contrastkit.errors import UserError
from contrastkit.losses import info_nce
from contrastkit.losses.info_nce import AUTO_KEEP_ELEMENTS

from .test_info_nce import largest_saved, reference

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: a second thread only spins

Case = Callable[..., torch.Tensor]


def _grads(fn: Case, inputs: list[torch.Tensor], chunk: int | str | None) -> tuple[torch.Tensor, ...]:
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    loss = fn(*leaves, chunk_size=chunk)
    return (loss.detach(), *torch.autograd.grad(loss, leaves))


def _assert_all_close(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


N, D, K = 23, 5, 9


def _data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    index = (torch.arange(N) + 7) % N
    index[4] = -1  # an anchor without a positive
    mask = torch.rand(N, N, generator=g) < 0.25
    mask[2] = False
    return {
        "z": torch.randn(N, D, generator=g),
        "k": torch.randn(N, D, generator=g),
        "neg": torch.randn(K, D, generator=g),
        "w": torch.rand(N, N + K, generator=g) * 2,
        "w_keys": torch.rand(N, N, generator=g) + 0.05,
        "index": index,
        "labels": torch.randint(0, 5, (N,), generator=g),
        "mask": mask,
    }


def _cases() -> dict[str, tuple[Case, list[str]]]:
    x = _data()
    return {
        "simclr_index": (lambda z, chunk_size: info_nce(z, positive_index=x["index"], chunk_size=chunk_size), ["z"]),
        "supcon_labels": (
            lambda z, chunk_size: info_nce(z, labels=x["labels"], temperature=0.3, chunk_size=chunk_size),
            ["z"],
        ),
        "mask_queue_weights": (
            lambda z, neg, w, chunk_size: info_nce(
                z, positive_mask=x["mask"], negative_keys=neg, negative_weights=w, chunk_size=chunk_size
            ),
            ["z", "neg", "w"],
        ),
        "labels_queue": (
            lambda z, neg, chunk_size: info_nce(
                z, labels=x["labels"], negative_keys=neg, temperature=0.2, chunk_size=chunk_size
            ),
            ["z", "neg"],
        ),
        "keys_queue_weights": (
            lambda z, k, neg, w, chunk_size: info_nce(
                z, k, negative_keys=neg, negative_weights=w, temperature=0.07, chunk_size=chunk_size
            ),
            ["z", "k", "neg", "w"],
        ),
        "keys_labels_dot": (
            lambda z, k, chunk_size: info_nce(
                z, k, labels=x["labels"], similarity="dot", temperature=0.5, chunk_size=chunk_size
            ),
            ["z", "k"],
        ),
        "self_mask_weights_dot": (
            lambda z, w, chunk_size: info_nce(
                z, positive_mask=x["mask"], negative_weights=w, similarity="dot", chunk_size=chunk_size
            ),
            ["z", "w_keys"],
        ),
        "unbounded_cosine_t001": (
            lambda z, neg, chunk_size: info_nce(
                z, positive_index=x["index"], negative_keys=neg, temperature=0.01, chunk_size=chunk_size
            ),
            ["z", "neg"],
        ),
    }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("chunk", [1, 4, 10, "auto", 10_000])
def test_chunked_equals_unchunked_loss_and_grads(name: str, chunk: int | str) -> None:
    fn, names = CASES[name]
    data = _data()
    inputs = [data[n] for n in names]
    _assert_all_close(_grads(fn, inputs, chunk), _grads(fn, inputs, None))


def test_tensor_temperature_chunked_gets_the_same_gradient() -> None:
    x = _data()
    inputs = [x["z"], torch.tensor(0.15)]  # the loss and its gradients for z and t
    for keys in (None, x["k"]):

        def fn(
            z: torch.Tensor, t: torch.Tensor, chunk_size: int | None, keys: torch.Tensor | None = keys
        ) -> torch.Tensor:
            return info_nce(z, keys, labels=x["labels"], temperature=t, chunk_size=chunk_size)

        for chunk in (None, 3):
            _assert_all_close(_grads(fn, inputs, chunk), _grads(fn, inputs, None))


def test_chunked_matches_the_naive_loop() -> None:
    x = _data()
    z, neg, w = x["z"], x["neg"], x["w"]
    mask = x["mask"]
    for chunk in (2, 7):
        got = info_nce(z, positive_mask=mask, negative_keys=neg, negative_weights=w, temperature=0.3, chunk_size=chunk)
        want = reference(z, None, mask, 0.3, "cosine", neg, w)
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
        got_k = info_nce(z, x["k"], labels=x["labels"], negative_keys=neg, temperature=0.3, chunk_size=chunk, reduction="none")
        pos = x["labels"][:, None] == x["labels"][None, :]
        want_k = reference(z, x["k"], pos, 0.3, "cosine", neg, None, "none")
        torch.testing.assert_close(got_k.double(), want_k, atol=1e-5, rtol=1e-5)


def test_gradcheck_of_the_chunked_backward() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(7, 3, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn(7, 3, dtype=torch.float64, generator=g, requires_grad=True)
    neg = torch.randn(4, 3, dtype=torch.float64, generator=g, requires_grad=True)
    w = (torch.rand(7, 11, dtype=torch.float64, generator=g) + 0.2).requires_grad_()
    index = torch.tensor([3, 0, 5, -1, 1, 6, 2])
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 0])

    def mirror(z_: torch.Tensor, n_: torch.Tensor) -> torch.Tensor:
        return info_nce(z_, positive_index=index, negative_keys=n_, chunk_size=2, temperature=0.5)

    def rect(z_: torch.Tensor, k_: torch.Tensor, n_: torch.Tensor, w_: torch.Tensor) -> torch.Tensor:
        return info_nce(z_, k_, labels=labels, negative_keys=n_, negative_weights=w_, chunk_size=3)

    def unbounded(z_: torch.Tensor, n_: torch.Tensor) -> torch.Tensor:
        return info_nce(z_, labels=labels, negative_keys=n_, similarity="dot", chunk_size=2, temperature=0.7)

    assert torch.autograd.gradcheck(mirror, (z, neg))
    assert torch.autograd.gradcheck(rect, (z, k, neg, w))
    assert torch.autograd.gradcheck(unbounded, (z, neg))


def test_large_logits_stay_finite_in_every_mode() -> None:
    # dot similarity with large norms: logits in the thousands; the online max keeps exp finite
    g = torch.Generator().manual_seed(2)
    z = torch.randn(16, 4, generator=g) * 30
    index = (torch.arange(16) + 8) % 16
    logits = z.double() @ z.double().T / 0.1
    logits.fill_diagonal_(float("-inf"))
    want = torch.nn.functional.cross_entropy(logits, index)  # closed form in float64
    for chunk in (None, 5):
        zz = z.clone().requires_grad_()
        got = info_nce(zz, positive_index=index, similarity="dot", temperature=0.1, chunk_size=chunk)
        got.backward()
        assert zz.grad is not None and torch.isfinite(zz.grad).all()
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-3)


def test_chunked_mode_keeps_only_a_block_for_backward() -> None:
    z = torch.randn(96, 8, requires_grad=True)
    labels = torch.arange(96) % 12  # eight positives per row
    neg = torch.randn(40, 8)
    largest = {}
    for chunk in (None, 8):
        _, largest[chunk] = largest_saved(
            lambda chunk=chunk: info_nce(z, labels=labels, negative_keys=neg, chunk_size=chunk).backward()
        )
    assert largest[None] >= 96 * 96 // 2  # the exp-logit tiles are kept without chunking
    assert largest[8] <= 96 * 8  # only inputs and (N,) statistics with it


def test_chunked_forward_never_allocates_the_full_matrix() -> None:
    from torch.profiler import ProfilerActivity, profile

    n = 256
    z = torch.randn(n, 16, requires_grad=True)
    index = (torch.arange(n) + n // 2) % n
    full = n * n * 4
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        info_nce(z, positive_index=index, chunk_size=64).backward()
    biggest = max(e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0)
    assert biggest <= full // 4, (biggest, full)


def test_auto_chunking_switches_on_above_the_keep_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    common = importlib.import_module("contrastkit.losses._info_nce_common")  # the budget's home
    z = torch.randn(64, 4, requires_grad=True)
    index = (torch.arange(64) + 32) % 64
    kept = info_nce(z, positive_index=index)
    monkeypatch.setattr(common, "AUTO_KEEP_ELEMENTS", 16)
    monkeypatch.setattr(common, "AUTO_TILE_ELEMENTS", 256)
    chunked, largest = largest_saved(lambda: info_nce(z, positive_index=index))
    torch.testing.assert_close(chunked, kept)
    assert largest <= 64 * 4
    assert AUTO_KEEP_ELEMENTS >= 1 << 20


def test_bad_chunk_size() -> None:
    z = torch.randn(4, 3)
    for bad in (0, -2, 1.5, "big", True):
        with pytest.raises(UserError, match="chunk_size"):
            info_nce(z, labels=torch.zeros(4), chunk_size=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(CASES))
def test_kept_tile_paths_equal_the_cross_entropy_path(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unchunked: cross_entropy on small one-positive problems, else the kept exp-logit tiles
    (one tile, or several upper-triangle tiles when keys = queries): all give the same."""
    import importlib

    tiled = importlib.import_module("contrastkit.losses._info_nce_tiled")  # the path's thresholds
    fn, names = CASES[name]
    data = _data()
    inputs = [data[n] for n in names]
    base = _grads(fn, inputs, None)
    monkeypatch.setattr(tiled, "SMALL_ELEMENTS", 0)
    _assert_all_close(_grads(fn, inputs, None), base)
    monkeypatch.setattr(tiled, "KEEP_MIRROR_TILE", 5)
    _assert_all_close(_grads(fn, inputs, None), base)
