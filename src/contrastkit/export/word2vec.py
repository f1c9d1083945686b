"""`--format word2vec`: a run's vectors by word or item id in the word2vec text format, which
``gensim.models.KeyedVectors.load_word2vec_format(path, binary=False)`` loads (as do fastText's
and most word-vector tools): a header line ``N D``, then one line per key, ``key v1 … vD``,
separated by single spaces, UTF-8.

Which vectors: a word2vec run's token vectors (the input vectors, as `embed` writes them), an
item2vec run's item input vectors (the ones `similar` compares), a recommendation run's item
embeddings of its best epoch; keys in the run's vocabulary order. Values are written with 9
significant digits, so that the float32 vectors read back bit for bit.

gensim splits each line at spaces, so a key cannot hold one: whitespace inside a key (an item id
such as ``"The Matrix"``) is written as ``_`` and the export says how many keys it changed; two
keys that would become the same, or an empty key, are a one-line error. After writing, gensim
(when installed) loads the file and its keys and vectors are compared with the run's.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from contrastkit.errors import UserError
from contrastkit.export.files import atomic_path
from contrastkit.index.keyed import KeyedVectors

SUFFIXES: tuple[str, ...] = (".txt", ".vec")
_SPACE = re.compile(r"\s")


def check_word2vec(out: Path) -> None:
    """The one-line errors before the run is loaded: --out's suffix."""
    if out.suffix not in SUFFIXES:
        raise UserError(f"--out {str(out)!r}: word2vec text goes into a .txt or .vec file; name it *.txt or *.vec")


def gensim_keys(keys: list[str], what: str) -> tuple[list[str], int]:
    """The keys as written (whitespace → ``_``) and how many changed; a one-line error for an
    empty key or two keys made equal."""
    written = [_SPACE.sub("_", k) for k in keys]
    seen: dict[str, str] = {}
    for original, key in zip(keys, written, strict=True):
        if not key:
            raise UserError(f"the run has an empty {what} id, which the word2vec format cannot hold")
        if key in seen:
            raise UserError(
                f"{what}s {seen[key]!r} and {original!r} both become {key!r} in the word2vec format (spaces are written "
                "as '_'); export this run with --format arrays"
            )
        seen[key] = original
    return written, sum(a != b for a, b in zip(keys, written, strict=True))


def export_word2vec(vectors: KeyedVectors, out: Path) -> list[str]:
    """Write ``out``; load it back with gensim where installed; return the report lines."""
    check_word2vec(out)
    keys, changed = gensim_keys(vectors.words, vectors.what)
    n, d = vectors.matrix.shape
    row = " ".join(["%.9g"] * d)
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(f"{n} {d}\n")
        for key, values in zip(keys, vectors.matrix.tolist(), strict=True):
            handle.write(f"{key} {row % tuple(values)}\n")
    lines = [f"wrote {out}: {n} {vectors.what}s × {d} (word2vec text format: a 'N D' header line, then "
             f"'{vectors.what} v1 … v{d}' per line)"]
    if changed:
        example = next(k for k, w in zip(vectors.words, keys, strict=True) if k != w)
        lines.append(f"{changed} {vectors.what} id(s) hold whitespace, written with '_' instead "
                     f"(e.g. {example!r} → {_SPACE.sub('_', example)!r}): gensim splits lines at spaces")
    lines.append(_gensim_check(out, keys, vectors.matrix))
    return [*lines, "load it with:",
            "    from gensim.models import KeyedVectors",
            f"    vectors = KeyedVectors.load_word2vec_format({str(out)!r}, binary=False)",
            "    vectors.most_similar(positive=[...], negative=[...], topn=10)  # as run.most_similar(..., k=10)"]


def _gensim_check(out: Path, keys: list[str], matrix: np.ndarray) -> str:
    """gensim's reading of ``out`` against what was written (a line saying so), or that gensim is
    not installed."""
    try:
        from gensim.models import KeyedVectors as GensimVectors
    except ImportError:
        return "gensim is not installed: loading with KeyedVectors.load_word2vec_format not checked"
    loaded = GensimVectors.load_word2vec_format(str(out), binary=False)
    if list(loaded.index_to_key) != keys:
        raise RuntimeError(f"gensim read other keys from {out} than were written")
    diff = float(np.abs(loaded.vectors - matrix).max()) if matrix.size else 0.0
    if diff > 0:
        raise RuntimeError(f"gensim read vectors from {out} that differ from the run's by up to {diff:.2e}")
    return f"loaded back with gensim KeyedVectors.load_word2vec_format: {len(keys)} keys, vectors identical"
