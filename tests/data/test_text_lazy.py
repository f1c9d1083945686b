"""Training text read lazily (text.lazy): line-offset index, same rows and batches as the eager
readers, DataLoader workers, exact resume, the CLI and bad-line messages."""

from __future__ import annotations

import gzip
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastkit.data.text import (
    TextViewLoader,
    build_text_augmentation,
    read_pairs,
    read_sentences,
)
from contrastkit.data.text.lazy import LazyText, open_lazy_text
from contrastkit.errors import UserError

from ..text_helpers import fake_tokenize, make_corpus, write_text_data

pytestmark = pytest.mark.usefixtures("one_thread")


def _pairs_file(folder: Path, n: int = 300) -> Path:
    sentences = make_corpus(n)
    rows = [
        {"anchor": s, "positive": " ".join(s.split()[:5]), "negative": sentences[(i + 7) % len(sentences)],
         "split": "train" if i % 5 else "dev"}
        for i, s in enumerate(sentences)
    ]
    rows[3]["positive"] = ""  # an incomplete pair: skipped by both readers
    f = folder / "pairs.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows[:50]) + "\n\n" + "\n".join(json.dumps(r) for r in rows[50:]) + "\n")
    return f


def _same(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["index"], y["index"])
        for vx, vy in zip(x["views"], y["views"], strict=True):
            assert torch.equal(vx, vy)


def test_lazy_rows_match_eager_readers(tmp_path: Path) -> None:
    paths = write_text_data(tmp_path / "data", n=400)
    corpus = paths["corpus"]
    corpus.write_text("\n" + corpus.read_text() + "  \n" + corpus.read_text().splitlines()[4] + "\n")  # blank + duplicate
    cache = tmp_path / "run" / "data" / "text_index"
    text = open_lazy_text(str(corpus), [], None, cache, pairs=False)
    eager = read_sentences(str(corpus))
    assert isinstance(text, LazyText)
    assert len(text) == len(eager) and [text.row(i)[0] for i in range(len(text))] == eager
    offsets = next(cache.glob("*.offsets.npy"))
    assert offsets.stat().st_size - 128 == 8 * len(eager)  # the .npy header, then 8 bytes a row
    assert not list(corpus.parent.glob("*.npy"))  # nothing written next to the user's file
    # no list of the lines: small attributes, small when pickled (the index is memory-mapped)
    assert not any(isinstance(v, list | tuple) and len(v) > 3 for v in vars(text).values())
    assert len(pickle.dumps(text)) < 1000
    clone = pickle.loads(pickle.dumps(text))
    assert clone.take([5, 0]) == [[eager[5], eager[0]]]
    # gzip: decompressed once into the cache, the same rows
    gz = tmp_path / "data" / "corpus.txt.gz"
    gz.write_bytes(gzip.compress(corpus.read_bytes()))
    zipped = open_lazy_text(str(gz), [], None, cache, pairs=False, limit=100)
    assert list(zipped.iter_texts()) == eager[:100]

    pairs_file = _pairs_file(tmp_path / "data")
    for cols, where in ((["anchor", "positive"], None), (["anchor", "positive", "negative"], {"split": "train"})):
        lazy = open_lazy_text(str(pairs_file), cols, where, cache, pairs=True)
        ref = read_pairs(str(pairs_file), cols, where)
        got = lazy.take(range(len(lazy)))
        assert got == [ref.anchors, ref.positives, *([ref.negatives] if ref.negatives else [])]


@pytest.mark.parametrize("augment", [False, True])
def test_lazy_batches_equal_eager_and_workers(tmp_path: Path, augment: bool) -> None:
    paths = write_text_data(tmp_path / "data", n=300)
    cache = tmp_path / "cache"
    aug = build_text_augmentation([{"name": "word_deletion", "p": 0.3}]) if augment else None
    kw = {"batch_size": 16, "augmentation": aug, "seed": 5, "rank": 1, "world_size": 2}
    eager = TextViewLoader([read_sentences(str(paths["corpus"]))], fake_tokenize, **kw)  # type: ignore[arg-type]
    text = open_lazy_text(str(paths["corpus"]), [], None, cache, pairs=False)
    lazy0 = TextViewLoader(text, fake_tokenize, **kw)  # type: ignore[arg-type]
    lazy2 = TextViewLoader(text, fake_tokenize, workers=2, **kw)  # type: ignore[arg-type]
    ref = list(eager.batches(1))
    _same(ref, list(lazy0.batches(1)))
    _same(ref, list(lazy2.batches(1)))
    assert torch.equal(eager.generator.get_state(), lazy2.generator.get_state())
    # pairs from JSONL: the same batches lazily with workers as eagerly
    pairs_file = _pairs_file(tmp_path / "data")
    cols = ["anchor", "positive", "negative"]
    ref_pairs = read_pairs(str(pairs_file), cols)
    assert ref_pairs.negatives is not None
    eager_p = TextViewLoader([ref_pairs.anchors, ref_pairs.positives, ref_pairs.negatives], fake_tokenize, **kw)  # type: ignore[arg-type]
    lazy_p = TextViewLoader(open_lazy_text(str(pairs_file), cols, None, cache, pairs=True), fake_tokenize, workers=2, **kw)  # type: ignore[arg-type]
    _same(list(eager_p.batches(0)), list(lazy_p.batches(0)))


def test_lazy_resume_mid_epoch_with_workers(tmp_path: Path) -> None:
    paths = write_text_data(tmp_path / "data", n=300)
    text = open_lazy_text(str(paths["corpus"]), [], None, tmp_path / "cache", pairs=False)
    aug = build_text_augmentation([{"name": "word_swap"}, {"name": "word_deletion", "p": 0.2}])
    whole = TextViewLoader(text, fake_tokenize, batch_size=16, augmentation=aug, seed=2, workers=2)
    run = whole.batches(0)
    head = [next(run) for _ in range(3)]
    state = whole.state_dict()  # a checkpoint after 3 batches
    rest = list(run)
    assert len(head) + len(rest) == len(whole)
    again = TextViewLoader(text, fake_tokenize, batch_size=16, augmentation=aug, seed=2, workers=0)
    again.load_state_dict(state)
    _same(rest, list(again.batches(0, start=3)))


def test_bad_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"a": "x y", "b": "x"}\n{"a": "u", "b": "v"}\n{"a": "oops", \n')
    with pytest.raises(UserError, match=r"bad\.jsonl: line 3 is not valid JSON") as err:
        open_lazy_text(str(f), ["a", "b"], None, tmp_path / "cache", pairs=True)
    assert "\n" not in str(err.value)
    f.write_text('{"a": "x y", "b": "x"}\n[1, 2]\n')
    with pytest.raises(UserError, match="line 2 must be a JSON object"):
        open_lazy_text(str(f), ["a", "b"], None, tmp_path / "cache", pairs=True)
    with pytest.raises(UserError, match=r"text\.lazy reads \.txt and \.jsonl"):
        open_lazy_text(str(tmp_path / "t.csv"), ["a", "b"], None, tmp_path / "cache", pairs=True)


def test_cli_lazy_run_trains_and_evaluates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pytest.importorskip("transformers")
    from contrastkit.cli import main

    from ..text_helpers import tiny_text_sets

    paths = write_text_data(tmp_path / "data", n=600)
    run = tmp_path / "run"
    sets = tiny_text_sets(paths, **{"text.lazy": True, "text.workers": 2, "train.max_steps": 4,
                                    "train.checkpoint_every": 2, "eval.baselines": False})
    assert main(["train", "sick-simcse", *sets, "--out", str(run), "--quiet"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert np.isfinite(results["eval"]["encoders"]["trained"]["sts"]["spearman"])
    assert list((run / "data" / "text_index").glob("corpus.txt.offsets.npy"))
