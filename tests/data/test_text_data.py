"""Text data: file readers, data specs, augmentations and the text loader (no transformers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastkit.data.text import (
    EmbeddingNeighbours,
    TextViewLoader,
    WordNetSynonyms,
    build_text_augmentation,
    find_wordnet,
    read_lines,
    read_pairs,
    read_sentences,
    read_sts,
    read_table,
    span_crop,
    synonym_replacement,
    word_deletion,
    word_swap,
)
from contrastkit.data.text.corpus import SICK_ORDER, find_sick
from contrastkit.errors import UserError

from ..conftest import SHARED_DATA
from ..text_helpers import fake_tokenize

pytestmark = pytest.mark.usefixtures("one_thread")


def test_read_lines_skips_blank_lines(tmp_path: Path) -> None:
    f = tmp_path / "c.txt"
    f.write_text("a cat\n\n  a dog  \n")
    assert read_lines(f) == ["a cat", "a dog"]
    assert read_sentences(str(f)) == ["a cat", "a dog"]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_tables_pairs_triplets_and_filters(tmp_path: Path, fmt: str) -> None:
    rows = [
        {"q": "a cat", "p": "a kitten", "n": "a car", "split": "train"},
        {"q": "a dog", "p": "a puppy", "n": "a dock", "split": "train"},
        {"q": "a bird", "p": "a sparrow", "n": "a bill", "split": "test"},
        {"q": 'say "hi"', "p": "greet", "n": "leave", "split": "train"},
    ]
    f = tmp_path / f"t.{fmt}"
    if fmt == "jsonl":
        f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        sep = "," if fmt == "csv" else "\t"
        quote = (lambda v: '"' + v.replace('"', '""') + '"') if fmt == "csv" else (lambda v: v)
        f.write_text("\n".join([sep.join(rows[0])] + [sep.join(quote(v) for v in r.values()) for r in rows]) + "\n")
    table = read_table(f)
    assert table.column("q")[3] == 'say "hi"'
    pairs = read_pairs(str(f), ["q", "p"], {"split": "train"})
    assert pairs.anchors == ["a cat", "a dog", 'say "hi"'] and pairs.negatives is None
    triplets = read_pairs(str(f), ["q", "p", "n"], {"split": ["train", "test"]})
    assert len(triplets) == 4 and triplets.negatives is not None and triplets.negatives[2] == "a bill"
    assert read_sentences(str(f), ["q", "p"], {"split": "test"}) == ["a bird", "a sparrow"]
    with pytest.raises(UserError, match="column 'x' is not in"):
        read_pairs(str(f), ["x", "p"])
    with pytest.raises(UserError, match="no rows of"):
        read_pairs(str(f), ["q", "p"], {"split": "dev"})


def test_sts_file_and_bad_scores(tmp_path: Path) -> None:
    f = tmp_path / "s.tsv"
    f.write_text("a\tb\ts\nx y\tx z\t4.5\nu\tv\t1\n")
    sts = read_sts(str(f), ["a", "b", "s"])
    assert sts.scores == [4.5, 1.0] and sts.sentences2 == ["x z", "v"]
    f.write_text("a\tb\ts\nx\ty\tgood\nu\tv\t1\n")
    with pytest.raises(UserError, match="not a number"):
        read_sts(str(f), ["a", "b", "s"])


def test_missing_data_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # away from ../shared/data
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CONTRASTKIT_DATA", raising=False)
    with pytest.raises(UserError, match="does not exist"):
        read_sentences(str(tmp_path / "nope.txt"))
    with pytest.raises(UserError, match="SICK data set not found"):
        find_sick(str(tmp_path))
    with pytest.raises(UserError, match="unknown SICK split 'dev'"):
        read_sentences("sick:dev", data_root=str(tmp_path))


def test_sick_has_one_search_order_stated_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """text.data_root (the folder or its sick/), $CONTRASTKIT_DATA/sick, the cache, ../shared/data/sick:
    the first that holds SICK.txt wins; the error, doctor and README state that order."""
    work = tmp_path / "checkout"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CONTRASTKIT_DATA", str(tmp_path / "data"))
    places = {
        "shared": tmp_path / "shared" / "data" / "sick",
        "cache": tmp_path / "cache" / "contrastkit" / "sick",
        "env": tmp_path / "data" / "sick",
        "root/sick": tmp_path / "root" / "sick",
        "root": tmp_path / "root",
    }
    with pytest.raises(UserError, match="SICK data set not found") as info:
        find_sick(str(tmp_path / "root"))
    assert SICK_ORDER in str(info.value)
    for folder in places.values():  # from the last place to the first: each new one wins
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "SICK.txt").write_text("pair_ID\tsentence_A\n")
        assert find_sick(str(tmp_path / "root")).resolve() == (folder / "SICK.txt").resolve()
    assert find_sick(None).resolve() == (places["env"] / "SICK.txt").resolve()  # no data_root: $CONTRASTKIT_DATA
    from contrastkit import doctor

    assert SICK_ORDER in doctor._sick_hint()
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    assert "`text.data_root`, `$CONTRASTKIT_DATA/sick`, `~/.cache/contrastkit/sick`, `../shared/data/sick`" in readme


@pytest.mark.skipif(not (SHARED_DATA / "sick" / "SICK.txt").is_file(), reason="needs ../shared/data/sick/SICK.txt")
def test_sick_splits() -> None:
    root = str(SHARED_DATA)
    test = read_sts("sick:test", data_root=root)
    assert len(test) == 4906 and min(test.scores) >= 1.0 and max(test.scores) <= 5.0
    train = read_sentences("sick:train", data_root=root)
    assert len(train) == len(set(train)) > 4000
    entail = read_pairs("sick:train", ["sentence_A", "sentence_B"], {"entailment_label": "ENTAILMENT"}, data_root=root)
    assert 1000 < len(entail) < 4439


def test_word_operations() -> None:
    rng = np.random.default_rng(0)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]
    for _ in range(50):
        crop = span_crop(words, rng, 0.5, 0.7)
        assert 5 <= len(crop) <= 7 and " ".join(crop) in " ".join(words)
        kept = word_deletion(words, rng, 0.3)
        assert 1 <= len(kept) <= len(words) and all(w in words for w in kept)
        assert sorted(word_swap(words, rng, 2)) == sorted(words)
    assert word_deletion(words, rng, 1.0) != []  # one word survives
    assert span_crop(["one"], rng) == ["one"]


class _Toy:
    def synonyms(self, word: str) -> list[str]:
        return {"quick": ["fast"], "dog": ["hound"]}.get(word, [])


def test_synonym_replacement_keeps_case_and_punctuation() -> None:
    rng = np.random.default_rng(0)
    out = synonym_replacement(["The", "Quick", "dog."], rng, _Toy(), p=1.0)
    assert out == ["The", "Fast", "hound."]


def test_embedding_neighbours_are_nearest_tokens() -> None:
    vocab = {"[PAD]": 0, "cat": 1, "kitten": 2, "car": 3, "##s": 4}
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.1], [1.0, 0.0], [0.0, 1.0], [1.0, 0.05]])
    nb = EmbeddingNeighbours(vocab, emb, k=1)
    assert nb.synonyms("cat") == ["kitten"]  # "##s" is a word piece, never a replacement
    assert nb.synonyms("zebra") == []


@pytest.mark.skipif(find_wordnet() is None, reason="WordNet data not installed (Debian: wordnet-base)")
def test_wordnet_synonyms() -> None:
    wn = WordNetSynonyms()
    assert "large" in wn.synonyms("big")
    assert "automobile" in wn.synonyms("car")


def test_build_text_augmentation_and_errors() -> None:
    aug = build_text_augmentation(
        [{"name": "span_crop", "min_ratio": 0.5}, {"name": "word_deletion", "p": 0.2}, {"name": "word_swap"}]
    )
    a = aug(["the quick brown fox jumps"] * 3, np.random.default_rng(1))
    b = aug(["the quick brown fox jumps"] * 3, np.random.default_rng(1))
    assert a == b and all(s for s in a)
    aug2 = build_text_augmentation(
        [{"name": "synonym_replacement", "p": 1.0, "source": "embedding"}], embedding_synonyms=lambda k: _Toy()
    )
    assert aug2(["a quick dog"], np.random.default_rng(0)) == ["a fast hound"]
    with pytest.raises(UserError, match="unknown text augmentation 'word_drop'"):
        build_text_augmentation([{"name": "word_drop"}])
    with pytest.raises(UserError, match="unknown option"):
        build_text_augmentation([{"name": "word_swap", "q": 1}])
    with pytest.raises(UserError, match=r"p must be a number in \[0.0, 1.0\]"):
        build_text_augmentation([{"name": "word_deletion", "p": 2}])


def test_text_loader_views_order_and_resume() -> None:
    texts = [f"sentence number {i} here" for i in range(50)]
    aug = build_text_augmentation([{"name": "word_deletion", "p": 0.3}])
    loader = TextViewLoader([texts], fake_tokenize, batch_size=8, augmentation=aug, seed=3)
    assert len(loader) == 6
    batches = list(loader.batches(0))
    assert len(batches) == 6 and len(batches[0]["views"]) == 2
    indices = torch.cat([b["index"] for b in batches]).tolist()
    assert sorted(indices) == sorted(set(indices))
    # resume in the middle of an epoch replays the same batches
    fresh = TextViewLoader([texts], fake_tokenize, batch_size=8, augmentation=aug, seed=3)
    first = next(iter(fresh.batches(0)))
    state = fresh.state_dict()
    rest = list(fresh.batches(0, start=1))
    again = TextViewLoader([texts], fake_tokenize, batch_size=8, augmentation=aug, seed=3)
    again.load_state_dict(state)
    for x, y in zip(rest, again.batches(0, start=1), strict=True):
        for vx, vy in zip(x["views"], y["views"], strict=True):
            assert torch.equal(vx, vy)
    assert torch.equal(first["index"], batches[0]["index"])
    # without augmentation both views are the same tokens (dropout makes them differ)
    plain = TextViewLoader([texts], fake_tokenize, batch_size=8)
    b0 = next(iter(plain.batches(1)))
    assert torch.equal(b0["views"][0], b0["views"][1])
    pairs = TextViewLoader([texts, texts[::-1]], fake_tokenize, batch_size=8)
    assert len(next(iter(pairs.batches(0)))["views"]) == 2
    with pytest.raises(UserError, match="larger than the data set"):
        TextViewLoader([texts], fake_tokenize, batch_size=64)
