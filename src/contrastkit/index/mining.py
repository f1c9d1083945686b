"""Hard negatives mined from a corpus with an encoder: ``contrastkit mine`` / ``Run.mine``.

For each (anchor, positive) pair, the corpus texts nearest to the anchor (cosine, a faiss index
of :mod:`contrastkit.index.faiss_index`) are the candidates, most similar first. Left out: the
anchor itself and every known positive of the anchor; then the candidates outside the rank
window (``range_min``: skip that many of the nearest; ``range_max``: none beyond that rank);
then, with a ``margin``, every candidate whose similarity to the anchor is above the positive's
similarity minus the margin (a likely unlabelled positive: a false negative). Of the candidates
left, the ``negatives`` nearest (``sampling="top"``) or ``negatives`` drawn at random
(``sampling="random"``, seeded by ``seed`` and the pair's position; kept in rank order) make
that many (anchor, positive, negative) rows — the filters and sampling strategies of
sentence-transformers' ``mine_hard_negatives`` (its ``range_min`` / ``range_max`` /
``absolute_margin`` / ``sampling_strategy``), on our index.

The rows are written as a table (``.tsv``, ``.csv`` or ``.jsonl``) with the columns ``anchor``,
``positive``, ``negative``, which ``simcse_supervised`` trains on with
``text.train_columns: [anchor, positive, negative]``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from contrastkit.data.text.corpus import SICK_COLUMNS, read_pairs
from contrastkit.data.text.spec import TextConfig, read_spec_texts, split_columns
from contrastkit.errors import UserError, check_choice
from contrastkit.index.faiss_index import EmbeddingIndex, require_faiss

TRIPLE_COLUMNS = ("anchor", "positive", "negative")
TRIPLE_FORMATS = (".tsv", ".csv", ".jsonl")
SAMPLING = ("top", "random")  # which of the filtered candidates become negatives


@dataclass
class MinedTriples:
    """(anchor, positive, negative) rows and what the filters did (``stats``)."""

    anchors: list[str] = field(default_factory=list)
    positives: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.anchors)


def _count(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_mining_args(
    negatives: int, margin: float | None, range_min: int, range_max: int | None, k: int | None,
    sampling: str = "top", seed: int = 0,
) -> tuple[int, int]:
    """(range_max, k) after checking every argument (one-line errors naming the bad one)."""
    check_choice("--sampling", sampling, SAMPLING)
    _count(seed, "--seed", 0)
    _count(negatives, "--negatives", 1)
    _count(range_min, "--range-min", 0)
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, int | float) or not margin >= 0):
        raise UserError(f"--margin must be a number >= 0 (how much less similar than the positive), got {margin!r}")
    if range_max is not None:
        _count(range_max, "--range-max", 1)
        if range_max < range_min + negatives:
            raise UserError(
                f"--range-max {range_max} leaves no room for {negatives} negative(s) after --range-min {range_min}; "
                f"use --range-max >= {range_min + negatives}"
            )
    if k is not None:
        _count(k, "--k", 1)
        if range_max is not None and k < range_max:
            raise UserError(f"--k {k} (candidates searched per anchor) must be >= --range-max {range_max}")
        if k < range_min + negatives:
            raise UserError(f"--k {k} leaves no room for {negatives} negative(s) after --range-min {range_min}")
    window = range_max if range_max is not None else (k if k is not None else range_min + 10 * negatives)
    return window, k if k is not None else window


def mine_hard_negatives(
    encode: Callable[[list[str]], Tensor | np.ndarray],
    anchors: Sequence[str],
    positives: Sequence[str],
    corpus: Sequence[str],
    *,
    negatives: int = 1,
    margin: float | None = None,
    range_min: int = 0,
    range_max: int | None = None,
    k: int | None = None,
    sampling: str = "top",
    seed: int = 0,
) -> MinedTriples:
    """Up to ``negatives`` hard negatives from ``corpus`` for each (anchor, positive) pair (see the
    module's text); ``encode(texts) -> (N, D)`` embeds texts. ``k``: candidates searched per
    anchor (default ``range_max``, else ``range_min + 10 × negatives``)."""
    window, k = check_mining_args(negatives, margin, range_min, range_max, k, sampling, seed)
    if len(anchors) != len(positives) or not anchors:
        raise UserError(f"mining needs as many anchors as positives, at least one; got {len(anchors)} and {len(positives)}")
    docs = list(dict.fromkeys(t for t in corpus if t.strip()))
    if not docs:
        raise UserError("the corpus to mine negatives from holds no text")
    known: dict[str, set[str]] = {}
    for a, p in zip(anchors, positives, strict=True):
        known.setdefault(a, {a}).add(p)
    queries = list(known)
    texts = list(dict.fromkeys([*queries, *positives]))
    where = {t: i for i, t in enumerate(texts)}
    emb = _unit(encode(texts))
    index = EmbeddingIndex.build(_unit(encode(docs)), kind="auto", metric="cosine", modality="text")
    # the anchor and its positives may be in the corpus: search that many more, then drop them
    extra = max(len(v) for v in known.values())
    sims, ids = index.search(emb[[where[q] for q in queries]], min(k + extra, len(docs)))
    candidates: dict[str, list[tuple[int, float]]] = {}
    dropped_known = 0
    for q, row_ids, row_sims in zip(queries, ids, sims, strict=True):
        found = [(int(i), float(s)) for i, s in zip(row_ids, row_sims, strict=True) if i >= 0]
        kept = [(i, s) for i, s in found if docs[i] not in known[q]]
        dropped_known += len(found) - len(kept)
        candidates[q] = kept[range_min:window]  # ranks range_min+1 .. range_max of the k searched
    out = MinedTriples()
    pos_sims: list[float] = []
    neg_sims: list[float] = []
    by_margin = short = 0
    for row, (a, p) in enumerate(zip(anchors, positives, strict=True)):
        pos = float(emb[where[a]] @ emb[where[p]])
        pos_sims.append(pos)
        left = [(i, s) for i, s in candidates[a] if margin is None or s <= pos - margin]
        by_margin += len(candidates[a]) - len(left)
        if sampling == "random" and len(left) > negatives:
            picked = np.random.default_rng([seed, row]).choice(len(left), size=negatives, replace=False)
            chosen = [left[j] for j in sorted(picked.tolist())]
        else:
            chosen = left[:negatives]
        short += len(chosen) < negatives
        for i, s in chosen:
            out.anchors.append(a)
            out.positives.append(p)
            out.negatives.append(docs[i])
            neg_sims.append(s)
    out.stats = {
        "pairs": len(anchors),
        "anchors": len(queries),
        "corpus": len(docs),
        "rows": len(out),
        "negatives_per_pair": negatives,
        "pairs_short": short,  # pairs that got fewer than `negatives` negatives
        "removed_as_known_positive": dropped_known,
        "removed_by_margin": by_margin,
        "k": k,
        "range_min": range_min,
        "range_max": window,
        "margin": margin,
        "sampling": sampling,
        "seed": seed,
        "mean_positive_similarity": float(np.mean(pos_sims)),
        "mean_negative_similarity": float(np.mean(neg_sims)) if neg_sims else None,
        "index": index.meta.kind,
    }
    return out


def _unit(x: Tensor | np.ndarray) -> np.ndarray:
    arr = x.detach().cpu().float().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return np.ascontiguousarray(arr / np.maximum(norms, 1e-12), dtype=np.float32)


def check_triples_path(out: str | Path) -> Path:
    """``out`` if its suffix is one the triples are written as (before anything is encoded)."""
    path = Path(out)
    if path.suffix.lower() not in TRIPLE_FORMATS:
        raise UserError(f"--out {str(out)!r}: triples are written as {', '.join(TRIPLE_FORMATS)}; name the file so")
    return path


def write_triples(triples: MinedTriples, out: str | Path) -> Path:
    """The rows as a table with the columns anchor, positive, negative (by ``out``'s suffix:
    .tsv with tabs and line breaks inside texts made spaces, .csv quoted, .jsonl objects)."""
    path = check_triples_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = zip(triples.anchors, triples.positives, triples.negatives, strict=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            for row in rows:
                handle.write(json.dumps(dict(zip(TRIPLE_COLUMNS, row, strict=True)), ensure_ascii=False) + "\n")
        elif suffix == ".csv":
            writer = csv.writer(handle)
            writer.writerow(TRIPLE_COLUMNS)
            writer.writerows(rows)
        else:
            handle.write("\t".join(TRIPLE_COLUMNS) + "\n")
            for row in rows:
                handle.write("\t".join(" ".join(t.split()) for t in row) + "\n")
    tmp.replace(path)
    return path


def read_pair_spec(spec: str, data_root: str | None = None) -> tuple[list[str], list[str]]:
    """(anchors, positives) of ``FILE#ANCHOR,POSITIVE`` (a table's two columns; a third is
    ignored) or ``sick:SPLIT`` (sentence_A, sentence_B)."""
    path, cols = split_columns(spec)
    if not cols and path.startswith("sick:"):
        cols = list(SICK_COLUMNS[:2])
    if len(cols) not in (2, 3):
        raise UserError(f"--pairs {spec!r}: name the anchor and positive columns, as FILE#ANCHOR,POSITIVE")
    read = read_pairs(path, cols[:2], data_root=data_root)
    return read.anchors, read.positives


def mine_to_file(
    encode: Callable[[list[str]], Tensor | np.ndarray],
    pairs: tuple[Sequence[str], Sequence[str]],
    corpus: str | None,
    out: str | Path,
    *,
    data_root: str | None = None,
    negatives: int = 1,
    margin: float | None = None,
    range_min: int = 0,
    range_max: int | None = None,
    k: int | None = None,
    sampling: str = "top",
    seed: int = 0,
) -> dict[str, Any]:
    """Mine (see :func:`mine_hard_negatives`) and write the rows to ``out``; ``corpus``: a text
    data spec (None: the pairs' positives). Returns the filters' statistics and ``out``."""
    anchors, positives = pairs
    docs = read_spec_texts(corpus, TextConfig(data_root=data_root), unique=True) if corpus else list(dict.fromkeys(positives))
    triples = mine_hard_negatives(
        encode, anchors, positives, docs, negatives=negatives, margin=margin, range_min=range_min,
        range_max=range_max, k=k, sampling=sampling, seed=seed,
    )
    return {**triples.stats, "out": str(write_triples(triples, out))}


def check_mining(out: str | Path, negatives: int, margin: float | None, range_min: int, range_max: int | None,
                 k: int | None, sampling: str = "top", seed: int = 0) -> None:
    """Every argument checked, and faiss present, before anything is read or encoded."""
    check_mining_args(negatives, margin, range_min, range_max, k, sampling, seed)
    check_triples_path(out)
    require_faiss()


def mine_with_encoder(
    encoder: str, corpus: str | None, out: str | Path, *, pairs: str | None, negatives: int = 1,
    margin: float | None = None, range_min: int = 0, range_max: int | None = None, k: int | None = None,
    sampling: str = "top", seed: int = 0, batch_size: int = 256, max_length: int = 128, data_root: str | None = None,
) -> dict[str, Any]:
    """:func:`mine_to_file` with a text encoder that is not a run's: ``minilm``, a transformers /
    sentence-transformers folder or a hub name (its own pooling, else mean), e.g. the encoder a
    recipe starts from; ``pairs`` (``FILE#ANCHOR,POSITIVE`` or ``sick:SPLIT``) is required."""
    from contrastkit.encoders.text import load_pretrained_text_encoder, minilm_path
    from contrastkit.training.runtime import resolve_device

    if pairs is None:
        raise UserError(f"{encoder!r} is not a run folder: mining with an encoder needs --pairs FILE#ANCHOR,POSITIVE")
    if encoder == "tiny":
        raise UserError("the tiny encoder is random until trained: mine with a trained run folder or a pretrained encoder")
    _count(max_length, "--max-length", 2)
    check_mining(out, negatives, margin, range_min, range_max, k, sampling, seed)
    text_pairs = read_pair_spec(pairs, data_root)
    enc = load_pretrained_text_encoder(minilm_path() if encoder == "minilm" else encoder, max_length=max_length)
    device = resolve_device("auto")
    enc.to(device)
    return mine_to_file(
        lambda texts: enc.encode(texts, batch_size=batch_size, device=device), text_pairs, corpus, out,
        data_root=data_root, negatives=negatives, margin=margin, range_min=range_min, range_max=range_max, k=k,
        sampling=sampling, seed=seed,
    )
