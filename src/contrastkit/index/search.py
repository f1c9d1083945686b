"""Indexes of a run's embeddings and queries against them: ``contrastkit index`` / ``search``.

Everything works on a run object (:func:`contrastkit.runner.load_run`) whose task can embed
items (:class:`~contrastkit.tasks.EmbedsItems`) and encode queries
(:class:`~contrastkit.tasks.AnswersQueries`). An index lives in ``RUN_DIR/index/NAME/`` (NAME
from the data spec unless given). Queries are text, or a path to an image file; they are encoded
by the run's own encoder: the sentence encoder of a text run, the image encoder of an image run,
either tower of an image–text run (so text→image and image→text search work in the shared space).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contrastkit.errors import UserError, closest
from contrastkit.index.faiss_index import META_FILE, EmbeddingIndex, IndexMeta, require_faiss
from contrastkit.tasks import AnswersQueries, EmbedsItems, TrainedRun, capable

INDEX_DIR = "index"


@dataclass
class Hit:
    """One search result."""

    rank: int
    score: float
    id: int
    item: Any


def index_name(spec: str) -> str:
    """A folder name for a data spec: 'sick:test' → 'sick-test', '/a/b/corpus.txt' → 'corpus'."""
    path = Path(spec.partition("#")[0])
    base = path.stem if path.suffix else spec
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.")
    return name or "index"


def available_indexes(run_dir: Path) -> list[str]:
    folder = Path(run_dir) / INDEX_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / META_FILE).is_file())


def build_index(
    run: TrainedRun, spec: str, *, kind: str = "auto", name: str | None = None, batch_size: int = 256
) -> tuple[Path, IndexMeta]:
    """Embed SPEC with the run's encoder and save a faiss index in RUN_DIR/index/NAME."""
    require_faiss()
    able: Any = capable(run, EmbedsItems, "index")
    vectors, items, modality = able.embed_items(spec, batch_size=batch_size, unique=True)
    index = EmbeddingIndex.build(vectors, items, kind=kind, modality=modality, source=spec)
    folder = index.save(run.path / INDEX_DIR / (name or index_name(spec)))
    return folder, index.meta


def open_index(run_dir: Path, name: str | None) -> EmbeddingIndex:
    """The run's index NAME (None: its only one), or a one-line error naming those there are."""
    names = available_indexes(run_dir)
    if not names:
        raise UserError(f"run {str(run_dir)!r} has no index yet; build one with: contrastkit index {run_dir} --data SPEC")
    if name is None:
        if len(names) > 1:
            raise UserError(f"run {str(run_dir)!r} has several indexes ({', '.join(names)}); pick one with --index")
        name = names[0]
    if name not in names:
        raise UserError(f"no index {name!r} in {run_dir}{closest(name, names)}; indexes: {', '.join(names)}")
    return EmbeddingIndex.load(Path(run_dir) / INDEX_DIR / name)


def encode_query(run: TrainedRun, query: str) -> tuple[np.ndarray, str]:
    """The query's embedding with the run's encoder, and its modality ('text' or 'image')."""
    able: Any = capable(run, AnswersQueries, "search")
    vector, modality = able.encode_query(query)
    return vector, modality


def search_run(run: TrainedRun, query: str, *, k: int = 10, name: str | None = None) -> tuple[IndexMeta, str, list[Hit]]:
    """Top-k items of a run's index for a text or image-file query."""
    capable(run, AnswersQueries, "search")  # a run of a task that can search
    index = open_index(run.path, name)
    vector, modality = encode_query(run, query)
    return index.meta, modality, search_index(index, vector, k)


def search_index(index: EmbeddingIndex, vector: np.ndarray, k: int) -> list[Hit]:
    """The top-k hits of one query vector (1, D) in an index."""
    scores, ids = index.search(vector, k)
    return [
        Hit(rank + 1, float(s), int(i), index.items[int(i)])
        for rank, (s, i) in enumerate(zip(scores[0], ids[0], strict=True))
        if int(i) >= 0
    ]
