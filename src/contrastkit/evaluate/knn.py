"""Weighted kNN classifier on frozen features (Wu et al. 2018, arXiv:1805.01978).

Cosine similarity to every training feature, the k most similar vote for their class with
weight exp(sim / T); the class with the largest total wins (ties: the lowest class id). This is
the monitor used by InstDisc, MoCo and SimCLR-style evaluations (k=200, T=0.1).

The search is blocked on both sides: a block of test rows against a block of the bank at a time,
with a running top-k merged across bank blocks, so memory stays at one block whatever the sizes.
On CPU, faiss (Johnson et al. 2019, arXiv:1702.08734; the optional ``faiss`` extra) does the
exact inner-product search when it is installed ("auto"): same neighbours up to float rounding.
"""

from __future__ import annotations

from typing import Any, TypedDict, Unpack

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.errors import UserError, check_choice, install_hint
from contrastkit.evaluate.metrics import (
    check_features,
    check_labels,
    check_num_classes,
    classification_metrics,
)

BACKENDS = ("auto", "torch", "faiss")
# elements of one (test block x bank block) similarity tile in the torch backend (256 MiB):
# one topk over a long row beats merging many short ones, so bank blocks are as long as this allows
TILE_ELEMENTS = 1 << 26
DEFAULT_K = 200
DEFAULT_TEMPERATURE = 0.1


class KnnOptions(TypedDict, total=False):
    """The search options of `knn_predict`, which `knn_evaluate` passes through."""

    k: int
    temperature: float
    batch_size: int
    device: torch.device | str | None
    backend: str
    bank_block: int | None


def _faiss() -> Any | None:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _topk_torch(
    bank: Tensor, queries: Tensor, k: int, batch_size: int, bank_block: int | None
) -> tuple[Tensor, Tensor]:
    """Exact top-k cosine neighbours (values, indices) of each query row, blocked both ways."""
    n_bank = bank.shape[0]
    block = bank_block or max(k, TILE_ELEMENTS // max(1, min(batch_size, queries.shape[0])))
    top_vals, top_idx = [], []
    for start in range(0, queries.shape[0], batch_size):
        q = queries[start : start + batch_size]
        # the first bank block starts the running top-k; later blocks merge into it
        vals, idx = (q @ bank[:block].T).topk(min(k, min(block, n_bank)), dim=1)
        for b0 in range(block, n_bank, block):
            bv, bi = (q @ bank[b0 : b0 + block].T).topk(min(k, min(block, n_bank - b0)), dim=1)
            both = torch.cat([vals, bv], dim=1)
            vals, pick = both.topk(min(k, both.shape[1]), dim=1)
            idx = torch.cat([idx, bi + b0], dim=1).gather(1, pick)
        top_vals.append(vals)
        top_idx.append(idx)
    return torch.cat(top_vals), torch.cat(top_idx)


def _topk_faiss(faiss: Any, bank: Tensor, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exact top-k inner products with a flat faiss index (float32 on CPU)."""
    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(bank.detach().cpu().float().contiguous().numpy())
    vals, idx = index.search(queries.detach().cpu().float().contiguous().numpy(), k)
    return torch.from_numpy(vals), torch.from_numpy(idx).long()


def knn_predict(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    *,
    num_classes: int,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
    backend: str = "auto",
    bank_block: int | None = None,
) -> Tensor:
    """Predicted class (int64, CPU) for each test row by weighted kNN vote (Wu et al. 2018).

    ``backend``: "torch" (blocks of ``batch_size`` test rows against bank blocks of
    ``bank_block`` rows, default sized so a similarity tile stays at 256 MiB, with a running
    top-k), "faiss" (exact flat inner-product index, CPU), or "auto" (faiss when installed and
    the work is on CPU, else torch). k is clipped to N_train. Runs on ``device`` (default:
    the device of ``train_feats``).
    """
    check_num_classes(num_classes)
    check_choice("knn backend", backend, BACKENDS)
    train_feats = check_features(train_feats, "train_feats")
    test_feats = check_features(test_feats, "test_feats")
    train_labels = check_labels(train_labels, train_feats.shape[0], num_classes, "train_labels")
    if test_feats.shape[1] != train_feats.shape[1]:
        raise UserError(
            f"test_feats has {test_feats.shape[1]} dims but train_feats has {train_feats.shape[1]}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"k must be a positive integer, got {k!r}")
    if not temperature > 0:
        raise UserError(f"temperature must be > 0, got {temperature!r}")
    for name, value in (("batch_size", batch_size), ("bank_block", bank_block)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserError(f"{name} must be a positive integer, got {value!r}")
    dev = torch.device(device) if device is not None else train_feats.device
    k = min(k, train_feats.shape[0])
    faiss = _faiss() if backend in ("auto", "faiss") else None
    if backend == "faiss" and faiss is None:
        raise UserError(f"knn backend 'faiss' needs faiss: {install_hint('faiss')} (or use 'torch')")
    use_faiss = faiss is not None and (backend == "faiss" or dev.type == "cpu")
    with torch.no_grad():
        bank = F.normalize(train_feats.to(dev), dim=1)
        queries = F.normalize(test_feats.to(dev), dim=1)
        if use_faiss:
            top_sim, top_idx = _topk_faiss(faiss, bank, queries, k)
            top_sim, top_idx = top_sim.to(dev), top_idx.to(dev)
        else:
            top_sim, top_idx = _topk_torch(bank, queries, k, batch_size, bank_block)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(queries.shape[0], num_classes, device=dev, dtype=weights.dtype)
        votes.scatter_add_(1, train_labels.to(dev)[top_idx], weights)
        return votes.argmax(dim=1).cpu()


def knn_evaluate(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    **options: Unpack[KnnOptions],
) -> dict[str, Any]:
    """Weighted kNN accuracy and macro metrics of test features against a labelled bank.

    ``options``: `knn_predict`'s search options (k, temperature, batch_size, device, backend,
    bank_block) with its defaults.
    """
    check_num_classes(num_classes)
    test_feats = check_features(test_feats, "test_feats")
    test_labels = check_labels(test_labels, test_feats.shape[0], num_classes, "test_labels")
    pred = knn_predict(train_feats, train_labels, test_feats, num_classes=num_classes, **options)
    result = classification_metrics(test_labels.cpu(), pred, num_classes)
    result["k"] = min(options.get("k", DEFAULT_K), int(train_feats.shape[0]))
    result["temperature"] = float(options.get("temperature", DEFAULT_TEMPERATURE))
    return result
