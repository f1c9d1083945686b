"""Nearest-neighbour index over embeddings with faiss (Johnson et al. 2019, arXiv:1702.08734).

Cosine similarity (vectors L2-normalised, inner product) or plain inner product. The kind is
chosen by size unless given: exact ``flat`` (IndexFlatIP) up to 50,000 vectors, ``hnsw``
(graph, no training) up to 1,000,000, ``ivf`` (inverted lists over k-means cells) beyond.
An index is a folder: ``index.faiss``, ``items.jsonl`` (one description per vector) and
``meta.json``. faiss is the optional extra ``contrastkit[faiss]``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contrastkit.errors import UserError, check_choice, install_hint

INDEX_KINDS: tuple[str, ...] = ("auto", "flat", "hnsw", "ivf")
METRICS: tuple[str, ...] = ("cosine", "ip")
EXACT_MAX = 50_000
HNSW_MAX = 1_000_000
INDEX_FILE, ITEMS_FILE, META_FILE = "index.faiss", "items.jsonl", "meta.json"


def require_faiss() -> Any:
    """The faiss module, or a UserError telling how to install it."""
    try:
        import faiss
    except ImportError:
        raise UserError(f"nearest-neighbour search needs faiss: {install_hint('faiss')}") from None
    return faiss


def choose_kind(n: int) -> str:
    """Exact search for small sets, HNSW for large ones, IVF for very large ones."""
    if n <= EXACT_MAX:
        return "flat"
    return "hnsw" if n <= HNSW_MAX else "ivf"


@dataclass
class IndexMeta:
    """What an index folder holds and how it was built."""

    kind: str
    metric: str
    dim: int
    count: int
    modality: str = "unknown"
    source: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: str | Path) -> IndexMeta:
        """The meta.json of an index folder."""
        return cls(**json.loads((Path(folder) / META_FILE).read_text()))


def _prepare(vectors: np.ndarray, metric: str, what: str) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise UserError(f"{what} must be a non-empty (N, D) matrix; got shape {x.shape}")
    if not np.isfinite(x).all():
        raise UserError(f"{what} hold NaN or infinite values")
    x = np.ascontiguousarray(x)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.maximum(norms, 1e-12)
    return np.ascontiguousarray(x, dtype=np.float32)


class EmbeddingIndex:
    """A faiss index and one item description (text, file, label, ...) per vector."""

    def __init__(self, index: Any, items: list[Any], meta: IndexMeta) -> None:
        if len(items) != meta.count:
            raise UserError(f"index holds {meta.count} vectors but {len(items)} item descriptions")
        self.index = index
        self.items = items
        self.meta = meta

    def __len__(self) -> int:
        return self.meta.count

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        items: list[Any] | None = None,
        *,
        kind: str = "auto",
        metric: str = "cosine",
        modality: str = "unknown",
        source: str = "",
        hnsw_m: int = 32,
        ef_search: int = 128,
        nlist: int | None = None,
        nprobe: int | None = None,
        seed: int = 0,
    ) -> EmbeddingIndex:
        """Index the rows of ``vectors`` (N, D); ``items`` describe them (default: row numbers)."""
        faiss = require_faiss()
        check_choice("index kind", kind, INDEX_KINDS)
        check_choice("index metric", metric, METRICS)
        x = _prepare(vectors, metric, "vectors")
        n, d = x.shape
        chosen = choose_kind(n) if kind == "auto" else kind
        params: dict[str, Any] = {}
        if chosen == "flat":
            index = faiss.IndexFlatIP(d)
        elif chosen == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = max(40, 2 * hnsw_m)
            index.hnsw.efSearch = ef_search
            params = {"M": hnsw_m, "efSearch": ef_search}
        else:
            cells = nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, cells, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            sample = x if n <= 256 * cells else x[rng.choice(n, 256 * cells, replace=False)]
            index.cp.seed = seed
            index.train(sample)
            index.nprobe = nprobe or max(1, min(cells, cells // 16 + 8))
            params = {"nlist": cells, "nprobe": int(index.nprobe)}
        index.add(x)
        descriptions = list(items) if items is not None else list(range(n))
        meta = IndexMeta(chosen, metric, d, n, modality, source, params)
        return cls(index, descriptions, meta)

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores (Q, k), ids (Q, k)) for each query row; ids -1 where fewer exist."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UserError(f"k must be a positive integer, got {k!r}")
        q = _prepare(np.atleast_2d(queries), self.meta.metric, "queries")
        if q.shape[1] != self.meta.dim:
            raise UserError(
                f"query vectors have {q.shape[1]} dimensions but the index holds {self.meta.dim}-d vectors"
            )
        scores, ids = self.index.search(q, min(k, self.meta.count))
        return scores, ids

    def save(self, folder: str | Path) -> Path:
        """Write index.faiss, items.jsonl and meta.json into folder."""
        faiss = require_faiss()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(folder / INDEX_FILE))
        with (folder / ITEMS_FILE).open("w", encoding="utf-8") as handle:
            for item in self.items:
                handle.write(json.dumps(item, ensure_ascii=False) + "\n")
        (folder / META_FILE).write_text(json.dumps(asdict(self.meta), indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> EmbeddingIndex:
        faiss = require_faiss()
        folder = Path(folder)
        if not (folder / INDEX_FILE).is_file() or not (folder / META_FILE).is_file():
            raise UserError(f"{str(folder)!r} holds no index (expected {INDEX_FILE} and {META_FILE})")
        meta = IndexMeta.read(folder)
        index = faiss.read_index(str(folder / INDEX_FILE))
        with (folder / ITEMS_FILE).open(encoding="utf-8") as handle:
            items = [json.loads(line) for line in handle if line.strip()]
        if meta.kind == "hnsw" and "efSearch" in meta.params:
            index.hnsw.efSearch = int(meta.params["efSearch"])
        if meta.kind == "ivf" and "nprobe" in meta.params:
            index.nprobe = int(meta.params["nprobe"])
        return cls(index, items, meta)
