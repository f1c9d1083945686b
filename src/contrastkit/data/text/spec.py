"""The ``text:`` section of the text tasks (text, image_text), the text task's ``eval:`` section
(evaluation on a dev set during training) and the texts a data spec names (``sick:test``, a .txt
file, ``FILE.csv#column``, ``FILE.parquet#column``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contrastkit.config import EvalConfig
from contrastkit.data.text.augment import AUGMENTATIONS
from contrastkit.data.text.corpus import hf_source, read_sentences
from contrastkit.encoders.text import TEXT_POOLINGS
from contrastkit.errors import UserError, check_choice
from contrastkit.options import option

TEXT_SUFFIXES: tuple[str, ...] = (".txt", ".csv", ".tsv", ".tab", ".jsonl", ".json", ".ndjson", ".parquet")


@dataclass
class TextConfig:
    """Text data, the text encoder and text evaluation (tasks text and image_text)."""

    train_file: str | None = option(
        None,
        "training data: sick:SPLIT, a .txt (one per line), .csv/.tsv/.jsonl, a Hugging Face datasets source (.parquet, "
        "a save_to_disk folder[:SPLIT], hf:FILE, hf:NAME[:CONFIG]:SPLIT); image_text: also tar shards (image + .txt)",
    )
    train_columns: list[str] = option(
        help="sentences; or anchor, positive[, negative]; or sentence1, sentence2, score (cosent, angle); or image, caption",
        factory=list,
    )
    train_filter: dict[str, Any] | None = option(None, "keep rows whose columns equal these values")
    max_train_examples: int | None = option(None, "use at most this many training rows", ge=1)
    lazy: bool = option(
        False,
        "read training rows from the file on demand (a .txt or .jsonl, optionally .gz) through a "
        "line-offset index in the run's data/text_index/ (8 bytes a row; .gz decompressed there "
        "once) instead of into memory; off: read eagerly (small files)",
    )
    batch_sampler: str = option(
        "random",
        "random: batches of the epoch's permutation; no_duplicates: no text twice in a batch, across columns "
        "(a duplicate is a false in-batch negative)",
        choices=("random", "no_duplicates"),
    )
    workers: int = option(0, "DataLoader worker processes that read and tokenise batches (0: in-process)", ge=0)
    sts_file: str | None = option(None, "STS evaluation: two sentences and a score")
    sts_columns: list[str] = option(
        help="sentence1, sentence2, score", factory=lambda: ["sentence_A", "sentence_B", "relatedness_score"]
    )
    sts_filter: dict[str, Any] | None = option(None, "keep STS rows whose columns equal these values")
    retrieval_file: str | None = option(
        None, "retrieval evaluation: (query, relevant document) pairs; image_text: also tar shards (image + .txt)"
    )
    retrieval_columns: list[str] = option(help="query, document", factory=list)
    retrieval_filter: dict[str, Any] | None = option(None, "keep retrieval rows whose columns equal these values")
    data_root: str | None = option(
        None,
        "the folder holding SICK.txt (or its sick/), searched first; then $CONTRASTKIT_DATA/sick, "
        "~/.cache/contrastkit/sick, ../shared/data/sick",
    )
    encoder: str = option("minilm", "minilm | tiny | a local folder | a hub name")
    pooling: str = option("mean", "token pooling of the sentence encoder", choices=TEXT_POOLINGS)
    max_length: int = option(64, "tokens per text", ge=2)
    dropout: float | None = option(None, "override the encoder's dropout (SimCSE's noise)", ge=0, lt=1)
    tiny_width: int = option(64, "tiny encoder: hidden width", ge=1)
    tiny_layers: int = option(2, "tiny encoder: layers", ge=1)
    tiny_vocab_size: int = option(8000, "tiny encoder: vocabulary built from the data", ge=16)
    augment: list[dict[str, Any]] | None = option(None, "discrete text views, e.g. [{name: word_deletion, p: 0.1}]")
    caption_templates: list[str] = option(
        help="image_text: captions from labels",
        factory=lambda: ["a photo of a {label}", "a {tone} {label}", "a {size} {tone} {label}"],
    )
    zero_shot_templates: list[str] = option(help="image_text: zero-shot prompts", factory=lambda: ["a photo of a {label}"])
    recall_k: list[int] = option(help="K of the retrieval metrics", factory=lambda: [1, 5, 10], ge=1)
    dev_file: str | None = option(
        None,
        "text task: the dev set, evaluated every eval.dev_every steps (0: after the last only); the best step's "
        "encoder is the run's: scored pairs (STS Spearman, 3 dev_columns) or (query, document) pairs (MRR@max "
        "recall_k, 2 dev_columns); none but eval.dev_every > 0: a seeded slice of the training pairs (dev_fraction)",
    )
    dev_columns: list[str] = option(
        help="sentence1, sentence2, score (STS) or query, document (retrieval); empty: sts_columns", factory=list
    )
    dev_filter: dict[str, Any] | None = option(None, "keep dev rows whose columns equal these values")
    dev_fraction: float = option(
        0.05, "share of the training pairs held out as the dev set when there is no dev_file", gt=0, lt=0.5
    )
    eval_dims: list[int] = option(
        help="also evaluate the embeddings cut to their first d coordinates, for each d (none: the "
        "method's matryoshka_dims, if any)",
        factory=list,
        ge=1,
    )

    def check_values(self, prefix: str) -> None:
        if not self.recall_k:
            raise UserError(f"{prefix}.recall_k must list positive integers, got {self.recall_k}")
        for item in self.augment or []:
            if not isinstance(item, dict) or "name" not in item:
                raise UserError(f"each {prefix}.augment entry must be a mapping with a name, got {item!r}")
            check_choice("text augmentation", str(item["name"]), AUGMENTATIONS)
        if self.sts_file and len(self.sts_columns) != 3:
            raise UserError(f"{prefix}.sts_columns must be [sentence1, sentence2, score], got {self.sts_columns}")
        if self.retrieval_file and self.retrieval_columns and len(self.retrieval_columns) != 2:
            raise UserError(f"{prefix}.retrieval_columns must be [query, document], got {self.retrieval_columns}")
        if self.dev_columns and len(self.dev_columns) not in (2, 3):
            raise UserError(
                f"{prefix}.dev_columns must be [sentence1, sentence2, score] (STS) or [query, document] (retrieval), "
                f"got {self.dev_columns}"
            )


@dataclass
class TextEvalConfig(EvalConfig):
    """The text task's evaluation: after training (as every task's), and on a dev set during it."""

    dev_every: int = option(
        0,
        "evaluate on the dev set (text.dev_file, else held-out training pairs) every this many steps and after "
        "the last; the best step's encoder becomes the run's (0: off)",
        ge=0,
    )


def split_columns(spec: str) -> tuple[str, list[str]]:
    """'file.csv#col1,col2' → ('file.csv', ['col1', 'col2'])."""
    path, sep, cols = spec.partition("#")
    return (path, [c for c in cols.split(",") if c]) if sep else (spec, [])


def is_text_spec(spec: str) -> bool:
    """Whether a data spec names text (a text/table file or sick:SPLIT) rather than images."""
    path, _ = split_columns(spec)
    if path.startswith("sick:") or (Path(path).suffix.lower() in TEXT_SUFFIXES and Path(path).is_file()):
        return True
    try:
        return hf_source(path) is not None
    except UserError:  # hf: with a malformed hub name is still meant as text
        return True


def read_spec_texts(spec: str, t: TextConfig, *, unique: bool = False) -> list[str]:
    """Texts of a data spec for embedding or indexing, in file order (``unique``: repeated texts
    dropped, for an index)."""
    path, cols = split_columns(spec)
    texts = read_sentences(path, cols, None, data_root=t.data_root, unique=False)
    return list(dict.fromkeys(texts)) if unique else texts
