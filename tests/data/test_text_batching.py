"""Text batches without duplicate texts (``text.batch_sampler: no_duplicates``) and the scores of
scored pairs: no text twice in a batch across columns, seeded, exact on resume, one global batch
split across processes."""

from __future__ import annotations

import random

import pytest
import torch

from contrastkit.data.text.loader import TextViewLoader, no_duplicate_batches
from contrastkit.errors import UserError

from ..text_helpers import fake_tokenize


def _pairs(n: int = 120, seed: int = 0) -> list[list[str]]:
    """(anchor, positive) pairs over a small pool of sentences: many texts repeat, in both columns."""
    rng = random.Random(seed)
    pool = [f"sentence {w} number {i}" for i, w in enumerate("abcdefghijklmnopqrstuvwxyz" * 2)]
    rows = [rng.sample(pool, 2) for _ in range(n)]
    return [[r[0] for r in rows], [r[1] for r in rows]]


def _texts(batch_rows: list[int], columns: list[list[str]]) -> list[str]:
    return [col[i] for i in batch_rows for col in columns]


def test_batches_hold_no_text_twice_and_random_batches_do() -> None:
    columns = _pairs()
    loader = TextViewLoader(columns, fake_tokenize, batch_size=8, seed=1, batch_sampler="no_duplicates")
    batches = [b["index"].tolist() for b in loader.batches(0)]
    assert len(batches) >= len(loader) - 2  # a few rows may find no batch without a clash
    for rows in batches:
        texts = _texts(rows, columns)
        assert len(texts) == len(set(texts)) == 16
    used = [i for rows in batches for i in rows]
    assert len(used) == len(set(used))  # every row at most once per epoch
    plain = TextViewLoader(columns, fake_tokenize, batch_size=8, seed=1)
    clashes = sum(len(set(t := _texts(b["index"].tolist(), columns))) < len(t) for b in plain.batches(0))
    assert clashes > 3  # the data has duplicates that random batches do put together
    # seeded: another seed or epoch gives other batches, the same seed the same ones
    again = TextViewLoader(columns, fake_tokenize, batch_size=8, seed=1, batch_sampler="no_duplicates")
    assert [b["index"].tolist() for b in again.batches(0)] == batches
    assert [b["index"].tolist() for b in loader.batches(1)] != batches
    other = TextViewLoader(columns, fake_tokenize, batch_size=8, seed=2, batch_sampler="no_duplicates")
    assert [b["index"].tolist() for b in other.batches(0)] != batches


def test_greedy_order_skips_a_clash_to_the_next_batch() -> None:
    texts = {0: ["a", "b"], 1: ["b", "c"], 2: ["d", "e"], 3: ["f", "g"], 4: ["c", "h"], 5: ["a", "i"]}
    assert no_duplicate_batches([0, 1, 2, 3, 4, 5], texts.__getitem__, 2) == [[0, 2], [1, 3], [4, 5]]
    # rows 1 and 5 clash with 0; of what is left, 4 clashes with 1: no second batch of 3
    assert no_duplicate_batches([0, 1, 5, 2, 3, 4], texts.__getitem__, 3) == [[0, 2, 3]]
    assert no_duplicate_batches([0, 1, 5, 2, 3, 4, 7], {**texts, 7: ["j"]}.__getitem__, 3) == [[0, 2, 3], [1, 5, 7]]
    assert no_duplicate_batches([0, 5], texts.__getitem__, 2) == []


def test_resume_and_scores_and_processes() -> None:
    columns = _pairs()
    scores = [float(i % 5) for i in range(len(columns[0]))]
    first = TextViewLoader(columns, fake_tokenize, batch_size=8, seed=4, scores=scores, batch_sampler="no_duplicates")
    full = list(first.batches(0))
    for b in full:
        assert b["scores"].dtype == torch.float32
        assert b["scores"].tolist() == [scores[i] for i in b["index"].tolist()]
    resumed = TextViewLoader(columns, fake_tokenize, batch_size=8, seed=4, scores=scores, batch_sampler="no_duplicates")
    resumed.load_state_dict(first.state_dict())
    for x, y in zip(full[3:], resumed.batches(0, start=3), strict=True):
        assert torch.equal(x["index"], y["index"]) and torch.equal(x["views"][1], y["views"][1])
    # two processes: the global batch of 16 has no duplicate; each rank gets its half
    ranks = [TextViewLoader(columns, fake_tokenize, batch_size=8, seed=4, rank=r, world_size=2,
                            batch_sampler="no_duplicates") for r in (0, 1)]
    for b0, b1 in zip(*(r.batches(0) for r in ranks), strict=True):
        texts = _texts(b0["index"].tolist() + b1["index"].tolist(), columns)
        assert len(set(texts)) == 32
    with pytest.raises(UserError, match="one number per row"):
        TextViewLoader(columns, fake_tokenize, batch_size=8, scores=scores[:5])
    with pytest.raises(UserError, match=r"unknown text\.batch_sampler 'no_dups'"):
        TextViewLoader(columns, fake_tokenize, batch_size=8, batch_sampler="no_dups")
