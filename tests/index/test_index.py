"""faiss index: exact search equals brute force, approximate kinds find most true neighbours,
saving and loading keep the answers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from contrastkit.errors import UserError
from contrastkit.index import EmbeddingIndex, choose_kind
from contrastkit.index.search import index_name


def _data(n: int = 3000, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(30, d))
    x = centers[rng.integers(0, 30, n)] + 0.3 * rng.normal(size=(n, d))
    q = centers[rng.integers(0, 30, 50)] + 0.3 * rng.normal(size=(50, d))
    return x.astype(np.float32), q.astype(np.float32)


def _brute(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    sims = qn @ xn.T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, ids, 1), ids


def test_flat_index_equals_brute_force(tmp_path: Path) -> None:
    x, q = _data()
    index = EmbeddingIndex.build(x, [f"item {i}" for i in range(len(x))], kind="auto")
    assert index.meta.kind == "flat"
    scores, ids = index.search(q, 10)
    ref_scores, ref_ids = _brute(x, q, 10)
    assert np.allclose(scores, ref_scores, atol=1e-5)
    assert (ids == ref_ids).mean() > 0.99  # equal up to ties
    loaded = EmbeddingIndex.load(index.save(tmp_path / "idx"))
    _, i2 = loaded.search(q, 10)
    assert np.array_equal(i2, ids) and loaded.items[int(ids[0, 0])] == f"item {ids[0, 0]}"


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_find_the_true_neighbours(kind: str, tmp_path: Path) -> None:
    x, q = _data()
    index = EmbeddingIndex.build(x, kind=kind)
    _, ids = index.search(q, 10)
    _, ref = _brute(x, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, ref, strict=True)])
    assert recall > 0.9
    loaded = EmbeddingIndex.load(index.save(tmp_path / kind))
    assert np.array_equal(loaded.search(q, 10)[1], ids)


def test_kind_by_size_and_errors() -> None:
    assert choose_kind(10) == "flat" and choose_kind(200_000) == "hnsw" and choose_kind(5_000_000) == "ivf"
    x, q = _data(200)
    index = EmbeddingIndex.build(x, metric="ip")
    scores, _ = index.search(q[:1], 3)
    assert np.allclose(scores[0], np.sort(x @ q[0])[::-1][:3], atol=1e-4)
    with pytest.raises(UserError, match="dimensions"):
        index.search(np.zeros((1, 3), dtype=np.float32), 3)
    with pytest.raises(UserError, match="unknown index kind"):
        EmbeddingIndex.build(x, kind="annoy")
    with pytest.raises(UserError, match="NaN"):
        EmbeddingIndex.build(np.full((3, 2), np.nan))
    assert index_name("sick:test") == "sick-test" and index_name("/a/b/corpus.txt") == "corpus"


def test_a_run_builds_its_query_models_once_per_state_of_the_weights(tmp_path: Path) -> None:
    """search / serve load a run's model once (run.cached), and again only when its weights change."""
    from contrastkit.runner import load_run

    (tmp_path / "config.yaml").write_text("task: image\n")
    run = load_run(tmp_path)
    built: list[object] = []

    def build() -> object:
        built.append(object())
        return built[-1]

    first = run.cached("model", build)
    assert run.cached("model", build) is first and len(built) == 1
    assert run.cached("other", build) is not first and len(built) == 2  # another model of the run
    ckpt = tmp_path / "checkpoints" / "last.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"new weights")  # a first checkpoint appears
    second = run.cached("model", build)
    assert second is not first and len(built) == 3
    assert run.cached("model", build) is second and len(built) == 3
    stat = ckpt.stat()  # the weights rewritten in place, a second later
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert run.cached("model", build) is not second and len(built) == 4
