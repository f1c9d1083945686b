"""Nearest-neighbour search over a run's embeddings: faiss indexes saved next to the run."""

from __future__ import annotations

from contrastkit.index.faiss_index import (
    INDEX_KINDS,
    EmbeddingIndex,
    IndexMeta,
    choose_kind,
    require_faiss,
)

__all__ = ["INDEX_KINDS", "EmbeddingIndex", "IndexMeta", "choose_kind", "require_faiss"]
