"""User–item interactions: readers, cleaning, per-user splits, BPR batches (recommendation)."""

from __future__ import annotations

from contrastkit.data.interactions.dataset import InteractionData, build_interaction_data
from contrastkit.data.interactions.download import MOVIELENS, download_movielens, locate_movielens
from contrastkit.data.interactions.given import (
    GIVEN_FORMATS,
    build_given_data,
    load_given,
    read_lists,
    read_pairs,
)
from contrastkit.data.interactions.loader import BPRLoader
from contrastkit.data.interactions.preprocess import clean, deduplicate, k_core, to_implicit
from contrastkit.data.interactions.readers import (
    FORMATS,
    RawInteractions,
    detect_format,
    read_interactions,
    read_ml100k,
    read_movielens_csv,
    read_movielens_dat,
    read_recbole,
    read_table,
)
from contrastkit.data.interactions.splits import SPLITS, Split, split_interactions

__all__ = [
    "FORMATS",
    "GIVEN_FORMATS",
    "MOVIELENS",
    "SPLITS",
    "BPRLoader",
    "InteractionData",
    "RawInteractions",
    "Split",
    "build_given_data",
    "build_interaction_data",
    "clean",
    "deduplicate",
    "detect_format",
    "download_movielens",
    "k_core",
    "load_given",
    "locate_movielens",
    "read_interactions",
    "read_lists",
    "read_ml100k",
    "read_movielens_csv",
    "read_movielens_dat",
    "read_pairs",
    "read_recbole",
    "read_table",
    "split_interactions",
    "to_implicit",
]
