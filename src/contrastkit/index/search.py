"""Indexes of a run's embeddings and queries against them: ``contrastkit index`` / ``search``.

An index lives in ``RUN_DIR/index/NAME/`` (NAME from the data spec unless given). Queries are
text, or a path to an image file; they are encoded by the run's own encoder: the sentence
encoder of a text run, the image encoder of an image run, either tower of an image–text run
(so text→image and image→text search work in the shared space).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contrastkit.errors import UserError, closest
from contrastkit.index.faiss_index import META_FILE, EmbeddingIndex, IndexMeta, require_faiss

INDEX_DIR = "index"
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")


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
    run_dir: str | Path,
    spec: str,
    *,
    kind: str = "auto",
    name: str | None = None,
    batch_size: int = 256,
) -> tuple[Path, IndexMeta]:
    """Embed SPEC with the run's encoder and save a faiss index in RUN_DIR/index/NAME."""
    require_faiss()
    from contrastkit.runs import read_run_config
    from contrastkit.tasks import capable

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    task = capable(cfg, "embed_items", "index")
    vectors, items, modality = task.embed_items(run_dir, cfg, spec, batch_size=batch_size, unique=True)
    index = EmbeddingIndex.build(vectors, items, kind=kind, modality=modality, source=spec)
    folder = index.save(run_dir / INDEX_DIR / (name or index_name(spec)))
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


def is_image_query(query: str) -> bool:
    path = Path(query)
    try:
        return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    except (OSError, ValueError):  # e.g. a sentence too long to be a file name
        return False


def read_query_image(path: str, channels: int, size: int) -> Any:
    from torchvision.io import ImageReadMode, decode_image

    from contrastkit.data.image.datasets import resize_uint8

    try:
        img = decode_image(path, mode=ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY)
    except Exception as exc:
        raise UserError(f"cannot read query image {path!r}: {exc}") from None
    return resize_uint8(img[None], size)


def encode_query(run_dir: Path, query: str) -> tuple[np.ndarray, str]:
    """The query's embedding with the run's encoder, and its modality ('text' or 'image')."""
    from contrastkit.runs import read_run_config
    from contrastkit.tasks import capable

    cfg = read_run_config(run_dir)
    task = capable(cfg, "encode_query", "search")
    vector, modality = task.encode_query(run_dir, cfg, query)
    return vector, modality


def search_run(run_dir: str | Path, query: str, *, k: int = 10, name: str | None = None) -> tuple[IndexMeta, str, list[Hit]]:
    """Top-k items of a run's index for a text or image-file query."""
    from contrastkit.runs import read_run_config
    from contrastkit.tasks import capable

    run_dir = Path(run_dir)
    capable(read_run_config(run_dir), "encode_query", "search")  # a run of a task that can search
    index = open_index(run_dir, name)
    vector, modality = encode_query(run_dir, query)
    return index.meta, modality, search_index(index, vector, k)


def search_index(index: EmbeddingIndex, vector: np.ndarray, k: int) -> list[Hit]:
    """The top-k hits of one query vector (1, D) in an index."""
    scores, ids = index.search(vector, k)
    return [
        Hit(rank + 1, float(s), int(i), index.items[int(i)])
        for rank, (s, i) in enumerate(zip(scores[0], ids[0], strict=True))
        if int(i) >= 0
    ]
