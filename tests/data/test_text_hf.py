"""Text tables through Hugging Face ``datasets``: Parquet files, ``hf:`` local JSONL / CSV, folders
written by ``save_to_disk`` (a Dataset, or a DatasetDict and its splits), column selection and
filters as for any table, one-line errors. Nothing from the hub."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("datasets")

import datasets

from contrastkit.data.text.corpus import hf_source, read_pairs, read_sentences, read_sts
from contrastkit.data.text.spec import is_text_spec
from contrastkit.errors import UserError

ROWS = {
    "anchor": ["a dog runs", "a cat sleeps", "the sun shines", "rain falls"],
    "positive": ["a dog is running", "a cat is asleep", "it is sunny", None],
    "negative": ["a cat runs", "a dog sleeps", "the moon shines", "snow falls"],
    "score": [4.5, 4.0, 3.5, 1.0],
    "lang": ["en", "en", "fr", "en"],
}


@pytest.fixture(autouse=True)
def _local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """datasets' cache of parsed files in the test's folder, not ~/.cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    yield


def _sources(tmp_path: Path) -> dict[str, str]:
    ds = datasets.Dataset.from_dict(ROWS)
    ds.to_parquet(str(tmp_path / "t.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": ds, "dev": ds.select([2, 3])}).save_to_disk(str(tmp_path / "dict"))
    with (tmp_path / "t.jsonl").open("w") as handle:
        for i in range(4):
            handle.write(json.dumps({k: v[i] for k, v in ROWS.items()}) + "\n")
    return {
        "parquet": str(tmp_path / "t.parquet"),
        "hf-parquet": f"hf:{tmp_path / 't.parquet'}",
        "hf-jsonl": f"hf:{tmp_path / 't.jsonl'}",
        "saved": str(tmp_path / "saved"),
        "dict": str(tmp_path / "dict"),
        "dict-train": f"{tmp_path / 'dict'}:train",
    }


@pytest.mark.parametrize("kind", ["parquet", "hf-parquet", "hf-jsonl", "saved", "dict", "dict-train"])
def test_every_source_reads_the_same_pairs_triplets_and_scores(tmp_path: Path, kind: str) -> None:
    spec = _sources(tmp_path)[kind]
    assert hf_source(spec) is not None and is_text_spec(spec + "#anchor")
    pairs = read_pairs(spec, ["anchor", "positive"])  # the row without a positive is skipped
    assert pairs.anchors == ROWS["anchor"][:3] and pairs.positives == ROWS["positive"][:3] and pairs.negatives is None
    triplets = read_pairs(spec, ["anchor", "positive", "negative"], {"lang": "en"})
    assert triplets.anchors == ["a dog runs", "a cat sleeps"] and triplets.negatives == ["a cat runs", "a dog sleeps"]
    assert read_sentences(spec, ["anchor"], unique=True) == ROWS["anchor"]
    sts = read_sts(spec, ["anchor", "negative", "score"])
    assert sts.scores == ROWS["score"] and sts.sentences2 == ROWS["negative"]


def test_a_split_of_a_saved_dataset_dict(tmp_path: Path) -> None:
    spec = _sources(tmp_path)["dict"]
    assert read_sentences(f"{spec}:dev", ["anchor"]) == ["the sun shines", "rain falls"]
    with pytest.raises(UserError, match=r"holds the splits train, dev; name one as .*dict:SPLIT$"):
        read_sentences(f"{spec}:test", ["anchor"])


def test_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _sources(tmp_path)["parquet"]
    with pytest.raises(UserError, match=r"^column 'anchr' is not in .*t\.parquet \(did you mean 'anchor'\?\); "
                                        r"columns: anchor, positive, negative, score, lang$"):
        read_pairs(spec, ["anchr", "positive"])
    with pytest.raises(UserError, match=r"is a table: name its text columns \(columns: anchor, positive"):
        read_sentences(spec)
    with pytest.raises(UserError, match=r"no such file or folder"):
        read_sentences(f"hf:{tmp_path / 'missing.jsonl'}", ["a"])
    with pytest.raises(UserError, match=r"hf:NAME, hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT"):
        read_sentences("hf:a:b:c:d", ["a"])
    (tmp_path / "bad.jsonl").write_text('{"anchor": "x"}\nnot json\n')
    with pytest.raises(UserError, match=r"^could not read 'hf:.*bad\.jsonl' with datasets: "):
        read_sentences(f"hf:{tmp_path / 'bad.jsonl'}", ["anchor"])
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the package were not installed
    with pytest.raises(UserError, match=r"^reading Hugging Face datasets sources needs the datasets package: pip install"):
        read_pairs(spec, ["anchor", "positive"])


def test_plain_tables_keep_their_own_reader(tmp_path: Path) -> None:
    """A .jsonl / .csv without hf: is read by contrastkit's reader (no datasets, no cache)."""
    _sources(tmp_path)
    assert hf_source(str(tmp_path / "t.jsonl")) is None and hf_source("sick:train") is None
    assert hf_source(str(tmp_path)) is None  # a folder that no save_to_disk wrote
    plain = read_pairs(str(tmp_path / "t.jsonl"), ["anchor", "positive"])
    assert plain == read_pairs(f"hf:{tmp_path / 't.jsonl'}", ["anchor", "positive"])  # the same rows either way
