"""Text data: corpora and tables from files, STS pairs, captions, text augmentations, loaders."""

from __future__ import annotations

from contrastkit.data.text.augment import (
    AUGMENTATIONS,
    EmbeddingNeighbours,
    TextAugmentation,
    WordNetSynonyms,
    build_text_augmentation,
    find_wordnet,
    span_crop,
    synonym_replacement,
    word_deletion,
    word_swap,
)
from contrastkit.data.text.corpus import (
    STSData,
    TextPairs,
    TextTable,
    filter_rows,
    find_sick,
    read_lines,
    read_pairs,
    read_sentences,
    read_sts,
    read_table,
    resolve_spec,
)
from contrastkit.data.text.loader import ImageTextLoader, TextViewLoader

__all__ = [
    "AUGMENTATIONS",
    "EmbeddingNeighbours",
    "ImageTextLoader",
    "STSData",
    "TextAugmentation",
    "TextPairs",
    "TextTable",
    "TextViewLoader",
    "WordNetSynonyms",
    "build_text_augmentation",
    "filter_rows",
    "find_sick",
    "find_wordnet",
    "read_lines",
    "read_pairs",
    "read_sentences",
    "read_sts",
    "read_table",
    "resolve_spec",
    "span_crop",
    "synonym_replacement",
    "word_deletion",
    "word_swap",
]
