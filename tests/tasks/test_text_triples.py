"""Hard negatives and a dev set for text runs, end to end on a tiny random BERT: a pairs run
validated on a dev set keeps its best step (and resumes exactly), `contrastkit mine` writes
(anchor, positive, negative) rows with its encoder, and simcse_supervised trains on the mined
rows from a Parquet file with GradCache."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytest.importorskip("faiss")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: nothing from a hub
pytest.importorskip("transformers")

from contrastkit.api import load_run
from contrastkit.cli import main
from contrastkit.data.text.corpus import read_pairs, read_sts
from contrastkit.evaluate.sts import evaluate_sts
from contrastkit.evaluate.text_dev import hold_out
from contrastkit.recipes import load_config
from contrastkit.runner import train_run
from contrastkit.runs import new_run_dir
from contrastkit.training import load_checkpoint

from ..conftest import InterruptAt, Interrupted
from ..text_helpers import quick_runs, tiny_text_sets, write_text_data

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def _quick_runs() -> Iterator[None]:
    with quick_runs():
        yield


def _pairs_data(folder: Path) -> dict[str, Path]:
    """The generated corpus and STS pairs, and (sentence, its first five words) pairs."""
    paths = write_text_data(folder, n=400)
    sentences = paths["corpus"].read_text().splitlines()
    rows = ["anchor,positive"] + [f"{s},{' '.join(s.split()[:5])}" for s in sentences]
    (folder / "pairs.csv").write_text("\n".join(rows) + "\n")
    return {**paths, "pairs": folder / "pairs.csv"}


def _pairs_sets(paths: dict[str, Path], **extra: object) -> list[str]:
    return tiny_text_sets(paths, **{
        "method.name": "simcse_supervised", "text.train_file": str(paths["pairs"]), "text.train_columns": "[anchor, positive]",
        "train.batch_size": 32, "train.max_steps": 8, "train.log_every": 4, "train.checkpoint_every": 100,
        "eval.baselines": False, **extra,
    })


@pytest.fixture(scope="module")
def dev_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path], str]:
    """simcse_supervised on the pairs at a learning rate (0.1) that overshoots: the generated STS
    pairs, as the dev set every 2 steps, peak early. The test evaluation is on the same pairs."""
    root = tmp_path_factory.mktemp("dev")
    paths = _pairs_data(root / "data")
    sets = _pairs_sets(paths, **{"optim.lr": 0.1, "eval.dev_every": 2, "text.dev_file": str(paths["sts"]),
                                 "text.dev_columns": "[s1, s2, score]"})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", *sets, "--out", str(root / "run")]) == 0
    return root / "run", paths, out.getvalue()


def test_the_best_dev_step_is_the_runs_encoder(dev_run: tuple[Path, dict[str, Path], str]) -> None:
    run, paths, printed = dev_run
    res = json.loads((run / "results.json").read_text())
    val = res["validation"]
    assert val["metric"] == "dev_sts_spearman" and val["direction"] == "max" and val["every"] == 2
    logged = [(int(r["step"]), float(r["dev_sts_spearman"])) for r in csv.DictReader((run / "train_log.csv").open())
              if r["dev_sts_spearman"]]
    assert [s for s, _ in logged] == [2, 4, 6, 8]  # the dev steps and only those
    assert [(c["step"], c["value"]) for c in val["curve"]] == logged
    best_step, best = max(logged, key=lambda sv: sv[1])
    assert val["best_step"] == best_step and val["best"] == pytest.approx(best)
    assert best_step < 8 and logged[-1][1] < best - 0.01  # training went past its best (lr 0.1)
    assert f"best dev_sts_spearman {best:.4f} at step {best_step}" in printed
    # the run's encoder is the best step's: the test figure (same pairs) is the best dev value
    assert res["eval"]["encoders"]["trained"]["sts"]["spearman"] == pytest.approx(best, abs=1e-6)
    saved = load_checkpoint(run / "checkpoints" / "best.pt")
    assert saved["step"] == best_step and saved["metric"] == "dev_sts_spearman"
    last = load_checkpoint(run / "checkpoints" / "last.pt")["state"]["model"]
    assert any(not torch.equal(saved["model"][k], last[k]) for k in last)
    opened = load_run(run)  # text_encoder/ (the exported tower) holds the best step's weights
    sts = read_sts(str(paths["sts"]), ["s1", "s2", "score"])
    again = evaluate_sts(opened.encode_text, sts.sentences1, sts.sentences2, sts.scores)["spearman"]
    assert again == pytest.approx(best, abs=1e-6)
    from contrastkit.encoders.text import load_pretrained_text_encoder

    tower = load_pretrained_text_encoder(run / "text_encoder")
    assert torch.allclose(tower.encode(sts.sentences1[:5]), opened.encode_text(sts.sentences1[:5]), atol=1e-5)


def test_held_out_dev_pairs_are_a_seeded_slice_of_anchors() -> None:
    anchors = [f"a{i % 30}" for i in range(90)]  # every anchor three times
    columns = [anchors, [f"p{i}" for i in range(90)], [f"n{i}" for i in range(90)]]
    train, dev = hold_out(columns, 0.1, seed=3)
    assert len(set(dev.anchors)) == 3 and len(dev) == 9  # 10 % of the anchors, with all their pairs
    assert not set(dev.anchors) & set(train[0]) and len(train[0]) == 81 and len(train) == 3
    assert sorted(train[1] + dev.positives) == sorted(columns[1])
    assert hold_out(columns, 0.1, seed=3)[1] == dev and hold_out(columns, 0.1, seed=4)[1] != dev


@pytest.mark.filterwarnings("ignore:the overrides change the task")
def test_dev_validation_resumes_exactly(tmp_path: Path) -> None:
    """A held-out dev set (no dev file), validated every 2 steps: killed at step 5 (the last
    checkpoint is step 4's, written after its validation) and resumed, the run has the curve,
    best step, best weights and final weights of the uninterrupted run."""
    paths = _pairs_data(tmp_path / "data")
    sets = _pairs_sets(paths, **{"optim.lr": 0.01, "eval.dev_every": 2, "train.checkpoint_every": 3, "eval.enabled": False})
    cfg = load_config(None, sets[1::2])
    whole = new_run_dir(cfg, str(tmp_path / "whole"), resume=False)
    _, ref = train_run(cfg, whole, progress=False, verbose=False)
    part = new_run_dir(cfg, str(tmp_path / "part"), resume=False)
    with pytest.raises(Interrupted):
        train_run(cfg, part, progress=False, verbose=False, callbacks=[InterruptAt(5)])
    assert load_checkpoint(part / "checkpoints" / "last.pt")["step"] == 4
    _, got = train_run(cfg, part, resume=True, progress=False, verbose=False)
    assert ref["validation"]["metric"] == "dev_mrr@10" and "held out" in ref["validation"]["source"]
    assert [c["step"] for c in got["validation"]["curve"]] == [2, 4, 6, 8]
    for key in ("best", "best_step"):
        assert got["validation"][key] == ref["validation"][key], key
    assert [(c["step"], c["value"]) for c in got["validation"]["curve"]] == [
        (c["step"], c["value"]) for c in ref["validation"]["curve"]]
    for name in ("best.pt", "last.pt"):
        a, b = (load_checkpoint(r / "checkpoints" / name) for r in (whole, part))
        ma, mb = (c["model"] if name == "best.pt" else c["state"]["model"] for c in (a, b))
        assert all(torch.equal(ma[k], mb[k]) for k in ma), name
    dev_rows = [r["step"] for r in csv.DictReader((part / "train_log.csv").open()) if r["dev_mrr@10"]]
    assert dev_rows == ["2", "4", "6", "8"]  # the steps redone after the resume are logged once
    held = read_pairs(str(whole / "data" / "dev_pairs.jsonl"), ["anchor", "positive"])
    assert len(held) == 20 and set(held.anchors) <= set(read_pairs(str(paths["pairs"]), ["anchor", "positive"]).anchors)


def _mined(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open(), delimiter="\t", quoting=csv.QUOTE_NONE))


def test_mine_the_runs_training_pairs(dev_run: tuple[Path, dict[str, Path], str], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    run, paths, _ = dev_run
    out = tmp_path / "triples.tsv"
    assert main(["mine", str(run), "--corpus", str(paths["corpus"]), "--out", str(out), "--negatives", "2"]) == 0
    printed = capsys.readouterr().out
    assert "(anchor, positive, negative) rows for 400 pairs from 400 corpus texts (flat index)" in printed
    rows = _mined(out)
    pairs = {(r["anchor"], r["positive"]) for r in rows}
    assert len(rows) == 800 and len(pairs) == 400  # two negatives for every training pair
    assert all(r["negative"] not in (r["anchor"], r["positive"]) for r in rows)
    assert "400 known positives" in printed  # each anchor is in the corpus itself: left out
    stats = load_run(run).mine(None, tmp_path / "window.jsonl", negatives=2, range_min=3, range_max=6, margin=0.0)
    positives = read_pairs(str(paths["pairs"]), ["anchor", "positive"]).positives
    assert stats["corpus"] == len(set(positives)) and stats["range_max"] == 6  # the corpus: the pairs' positives
    mined = read_pairs(str(tmp_path / "window.jsonl"), ["anchor", "positive", "negative"])
    assert mined.negatives is not None and all(n != p for n, p in zip(mined.negatives, mined.positives, strict=True))
    assert len(mined) == stats["rows"] <= 800


def test_mine_with_an_encoder_folder_and_mistakes(dev_run: tuple[Path, dict[str, Path], str], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run, paths, _ = dev_run
    out = tmp_path / "t.csv"
    pairs = f"{paths['pairs']}#anchor,positive"
    assert main(["mine", str(run / "text_encoder"), "--pairs", pairs, "--out", str(out), "--k", "5", "--sampling",
                 "random", "--seed", "3"]) == 0
    assert len(read_pairs(str(out), ["anchor", "positive", "negative"])) == 400
    capsys.readouterr()
    for argv, message in [
        (["mine", str(run), "--out", str(out), "--negatives", "0"], "--negatives must be an integer >= 1, got 0"),
        (["mine", str(run), "--out", str(out), "--sampling", "near"], "unknown --sampling 'near'"),
        (["mine", str(run), "--out", str(tmp_path / "t.txt")], "triples are written as .tsv, .csv, .jsonl"),
        (["mine", str(run / "text_encoder"), "--out", str(out)], "needs --pairs FILE#ANCHOR,POSITIVE"),
        (["mine", str(run), "--pairs", str(paths["pairs"]), "--out", str(out)], "name the anchor and positive columns"),
        (["mine", str(run), "--out", str(out), "--range-max", "5", "--k", "3"], "must be >= --range-max 5"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_train_on_mined_triples_from_parquet_with_gradcache(dev_run: tuple[Path, dict[str, Path], str],
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # not ~/.cache
    run, paths, _ = dev_run
    mined = tmp_path / "triples.jsonl"
    assert main(["mine", str(run), "--corpus", str(paths["corpus"]), "--out", str(mined)]) == 0
    parquet = tmp_path / "triples.parquet"
    datasets.Dataset.from_json(str(mined)).to_parquet(str(parquet))
    sets = _pairs_sets(paths, **{"text.train_file": str(parquet), "text.train_columns": "[anchor, positive, negative]",
                                 "method.gradcache_chunk": 16, "optim.lr": 0.001, "train.log_every": 2,
                                 "eval.enabled": False, "text.dev_file": str(paths["sts"]),
                                 "text.dev_columns": "[s1, s2, score]"})
    assert main(["train", *sets, "--out", str(tmp_path / "run"), "--quiet"]) == 0
    log = list(csv.DictReader((tmp_path / "run" / "train_log.csv").open()))
    losses = [float(r["loss"]) for r in log if r["loss"]]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.1
    # a dev file without eval.dev_every: validated once, after the last step
    val = json.loads((tmp_path / "run" / "results.json").read_text())["validation"]
    assert [c["step"] for c in val["curve"]] == [8] and val["best_step"] == 8 and val["every"] is None


@pytest.mark.filterwarnings("ignore:the overrides change the task")
def test_dev_set_and_source_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    from contrastkit.errors import UserError

    paths = _pairs_data(tmp_path / "data")
    (tmp_path / "t.parquet").write_bytes(b"")
    for extra, message in [
        ({"eval.dev_every": 2}, r"^eval.dev_every on unsupervised simcse needs text.dev_file \(sentences have no pairs"),
        ({"text.dev_file": str(paths["sts"]), "text.dev_columns": "[s1]"}, r"^text.dev_columns must be \[sentence1, "),
        ({"text.train_file": str(tmp_path / "t.parquet"), "text.lazy": True}, r"^text.lazy reads .txt and .jsonl files; "),
    ]:
        with pytest.raises(UserError, match=message):
            load_config(None, tiny_text_sets(paths, **extra)[1::2])
    pairs = _pairs_sets(paths, **{"eval.dev_every": 2, "text.lazy": True, "text.train_file": str(paths["corpus"])})
    with pytest.raises(UserError, match=r"^eval.dev_every with text.lazy needs text.dev_file"):
        load_config(None, pairs[1::2])


def test_the_text_task_names_its_validation() -> None:
    """SICK runs validate on SICK's trial split; pairs without a dev file on a held-out slice; unsupervised
    sentences without a dev file cannot be validated (one line)."""
    from contrastkit.errors import UserError
    from contrastkit.tasks import get_task

    text = get_task("text")
    spec = text.validation(load_config("sick-cosent", []))
    assert (spec.metric, spec.overrides, spec.every) == ("dev_sts_spearman", ("text.dev_file=sick:trial",), "eval.dev_every")
    pairs = load_config("sick-pairs", ["text.train_file=pairs.jsonl"])
    assert text.validation(pairs).overrides == ("eval.dev_every=100",) and text.validation(pairs).metric == "dev_mrr@10"
    with pytest.raises(UserError, match=r"needs text\.dev_file"):
        text.validation(load_config("sick-simcse", ["text.train_file=sentences.txt"]))
