"""Hard-negative mining: the rows equal a brute-force reference written here (cosine to every
corpus text, known positives left out, the rank window, the margin), the positive never comes
back as a negative, the margin removes near-duplicates of the positive, and the rows are
written as tables the text task reads back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from contrastkit.data.text.corpus import read_pairs
from contrastkit.errors import UserError
from contrastkit.index.mining import MinedTriples, mine_hard_negatives, write_triples

D = 24


def _world(seed: int = 0) -> tuple[dict[str, np.ndarray], list[str], list[str], list[str]]:
    """Random unit-ish vectors for texts; each positive has a near-duplicate in the corpus
    ("dup i": the positive's vector plus a little noise), the positives and two anchors are in
    the corpus too, and anchor 0 has two positives."""
    rng = np.random.default_rng(seed)
    anchors = [f"anchor {i}" for i in range(6)] + ["anchor 0"]
    positives = [f"pos {i}" for i in range(6)] + ["pos extra"]
    vec: dict[str, np.ndarray] = {}
    for a, p in zip(anchors, positives, strict=True):
        base = vec.setdefault(a, rng.normal(size=D))
        vec[p] = base + 0.3 * rng.normal(size=D)
    corpus = [f"doc {i}" for i in range(40)]
    for i, doc in enumerate(corpus):
        vec[doc] = vec[anchors[i % 6]] + rng.normal(size=D)
    dups = [f"dup {i}" for i in range(6)]
    for i, dup in enumerate(dups):
        vec[dup] = vec[positives[i]] + 0.02 * rng.normal(size=D)
    corpus = [*corpus, *dups, *positives, "anchor 1", "anchor 4"]
    return vec, anchors, positives, corpus


def _encode(vec: dict[str, np.ndarray]):  # type: ignore[no-untyped-def]
    return lambda texts: np.stack([vec[t] for t in texts]).astype(np.float32)


def _reference(
    vec: dict[str, np.ndarray], anchors: list[str], positives: list[str], corpus: list[str], *,
    negatives: int, margin: float | None, range_min: int, range_max: int,
) -> list[tuple[str, str, str]]:
    """Brute force: every corpus text ranked by cosine to the anchor."""
    unit = {t: v / np.linalg.norm(v) for t, v in vec.items()}
    known: dict[str, set[str]] = {}
    for a, p in zip(anchors, positives, strict=True):
        known.setdefault(a, {a}).add(p)
    docs = list(dict.fromkeys(corpus))
    rows = []
    for a, p in zip(anchors, positives, strict=True):
        ranked = sorted(docs, key=lambda d: -float(unit[a] @ unit[d]))
        ranked = [d for d in ranked if d not in known[a]][range_min:range_max]
        pos = float(unit[a] @ unit[p])
        kept = [d for d in ranked if margin is None or float(unit[a] @ unit[d]) <= pos - margin]
        rows += [(a, p, d) for d in kept[:negatives]]
    return rows


def _rows(t: MinedTriples) -> list[tuple[str, str, str]]:
    return list(zip(t.anchors, t.positives, t.negatives, strict=True))


@pytest.mark.parametrize(("negatives", "margin", "range_min", "range_max"), [
    (1, None, 0, None), (3, None, 0, None), (2, 0.05, 0, None), (2, None, 2, 8), (3, 0.1, 1, 12),
])
def test_mined_rows_equal_brute_force(negatives: int, margin: float | None, range_min: int, range_max: int | None) -> None:
    vec, anchors, positives, corpus = _world()
    mined = mine_hard_negatives(_encode(vec), anchors, positives, corpus, negatives=negatives, margin=margin,
                                range_min=range_min, range_max=range_max)
    window = range_max if range_max is not None else range_min + 10 * negatives
    expected = _reference(vec, anchors, positives, corpus, negatives=negatives, margin=margin, range_min=range_min,
                          range_max=window)
    assert _rows(mined) == expected
    known = {(a, p) for a, p in zip(anchors, positives, strict=True)}
    for a, _, n in _rows(mined):
        assert n != a and (a, n) not in known  # neither the anchor nor any positive of it is a negative
    assert mined.stats["rows"] == len(expected) and mined.stats["anchors"] == 6
    assert mined.stats["removed_as_known_positive"] > 0  # the positives are in the corpus and were found


def test_margin_removes_near_duplicates_of_the_positive() -> None:
    vec, anchors, positives, corpus = _world()
    plain = mine_hard_negatives(_encode(vec), anchors, positives, corpus, negatives=1)
    hardest = {(a, p): n for a, p, n in _rows(plain)}
    dup_first = [hardest[(f"anchor {i}", f"pos {i}")] == f"dup {i}" for i in range(6)]
    assert all(dup_first)  # without a margin the positives' near-duplicates are the hardest negatives
    mined = mine_hard_negatives(_encode(vec), anchors, positives, corpus, negatives=2, margin=0.05)
    assert not [n for _, _, n in _rows(mined) if n.startswith("dup ")]
    assert mined.stats["removed_by_margin"] >= 7  # each pair's near-duplicate at least
    unit = {t: v / np.linalg.norm(v) for t, v in vec.items()}
    for a, p, n in _rows(mined):
        assert float(unit[a] @ unit[n]) <= float(unit[a] @ unit[p]) - 0.05 + 1e-6


def test_random_sampling_draws_from_the_filtered_candidates_seeded() -> None:
    """sampling="random": each pair's negatives are a seeded draw from the candidates that the
    known-positive, rank-window and margin filters leave (brute force), in rank order; the same
    seed draws the same, another seed and "top" draw otherwise."""
    vec, anchors, positives, corpus = _world()
    args = {"negatives": 2, "margin": 0.02, "range_min": 1, "range_max": 10}
    left = _reference(vec, anchors, positives, corpus, **{**args, "negatives": 100})  # every candidate left
    drawn = [mine_hard_negatives(_encode(vec), anchors, positives, corpus, **args, sampling="random", seed=seed)
             for seed in (0, 0, 1)]
    assert _rows(drawn[0]) == _rows(drawn[1]) and _rows(drawn[0]) != _rows(drawn[2])
    for mined in drawn:
        assert mined.stats["sampling"] == "random"
        for a, p in dict.fromkeys(zip(anchors, positives, strict=True)):
            pool = [n for x, y, n in left if (x, y) == (a, p)]
            got = [n for x, y, n in _rows(mined) if (x, y) == (a, p)]
            assert len(got) == min(2, len(pool)) and got == [n for n in pool if n in got]  # a subset, in rank order
    top = mine_hard_negatives(_encode(vec), anchors, positives, corpus, **args)
    assert _rows(top) == _reference(vec, anchors, positives, corpus, **args) != _rows(drawn[0])


def test_fewer_candidates_than_asked_are_counted() -> None:
    vec, anchors, positives, corpus = _world()
    mined = mine_hard_negatives(_encode(vec), anchors, positives, corpus, negatives=2, margin=10.0)
    assert len(mined) == 0 and mined.stats["pairs_short"] == len(anchors)
    assert mined.stats["mean_negative_similarity"] is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"negatives": 0}, r"^--negatives must be an integer >= 1, got 0$"),
    ({"margin": -0.1}, r"^--margin must be a number >= 0"),
    ({"range_min": 5, "range_max": 6, "negatives": 2}, r"^--range-max 6 leaves no room for 2 negative\(s\) after --range-min 5"),
    ({"range_max": 10, "k": 5}, r"^--k 5 \(candidates searched per anchor\) must be >= --range-max 10$"),
    ({"range_min": -1}, r"^--range-min must be an integer >= 0, got -1$"),
    ({"sampling": "bottom"}, r"^unknown --sampling 'bottom'.*; allowed: random, top$"),
])
def test_bad_arguments_are_one_line_errors(kwargs: dict[str, object], message: str) -> None:
    vec, anchors, positives, corpus = _world()
    with pytest.raises(UserError, match=message):
        mine_hard_negatives(_encode(vec), anchors, positives, corpus, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".jsonl"])
def test_written_triples_read_back_as_training_columns(tmp_path: Path, suffix: str) -> None:
    triples = MinedTriples(["a one", 'a "two", quoted'], ["p one", "p two"], ["n\tone", "n two\nlines"])
    path = write_triples(triples, tmp_path / f"triples{suffix}")
    read = read_pairs(str(path), ["anchor", "positive", "negative"])
    assert read.anchors == triples.anchors and read.positives == triples.positives
    if suffix == ".tsv":  # a tab or a line break inside a text would break the table: made spaces
        assert read.negatives == ["n one", "n two lines"]
    else:
        assert read.negatives == triples.negatives
    if suffix == ".jsonl":
        assert json.loads(path.read_text().splitlines()[0]) == {"anchor": "a one", "positive": "p one", "negative": "n\tone"}
    with pytest.raises(UserError, match=r"triples are written as \.tsv, \.csv, \.jsonl"):
        write_triples(triples, tmp_path / "triples.txt")
