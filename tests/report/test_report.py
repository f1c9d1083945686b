"""contrastkit report: one self-contained HTML page per run (written by train, refreshed by
evaluate) or for several runs side by side; every evaluation number in it, nothing fetched."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from html import escape
from pathlib import Path
from typing import Any

import pytest
import torch

from contrastkit.cli import main
from contrastkit.report import fmt_number, refresh_run_report

from ..conftest import tiny_overrides
from ..recsys_helpers import tiny_sets, write_tiny_movielens
from ..text_helpers import tiny_text_sets, write_text_data

FAST = {"train.max_steps": 4, "train.checkpoint_every": 2, "eval.few_label_draws": 1, "eval.tsne_points": 60}


def _sets(**extra: Any) -> list[str]:
    return [x for pair in tiny_overrides(**{**FAST, **extra}) for x in ("--set", pair)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """An evaluated image run, the same recipe trained shorter with another temperature and no
    evaluation, a recsys run and a text run."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    out = {name: root / name for name in ("simclr", "simclr-t05", "lightgcn", "simcse")}
    try:
        assert main(["train", "--out", str(out["simclr"]), *_sets()]) == 0
        assert main(["train", "--out", str(out["simclr-t05"]), "--no-eval",
                     *_sets(**{"method.temperature": 0.5, "train.max_steps": 2})]) == 0
        movielens = write_tiny_movielens(root / "ml")
        assert main(["train", "ml100k-lightgcn", "--out", str(out["lightgcn"]),
                     *tiny_sets(movielens, **{"train.epochs": 2})]) == 0
        text = write_text_data(root / "text", n=300)
        assert main(["train", "--out", str(out["simcse"]),
                     *tiny_text_sets(text, **{"train.max_steps": 4, "train.log_every": 1})]) == 0
        yield out
    finally:
        torch.set_num_threads(before)


def _numbers(value: Any) -> Iterator[int | float]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield value


def _missing_numbers(page: str, ev: dict[str, Any]) -> list[str]:
    """Numbers of ``ev`` (as the report writes them) that the page lacks as a whole token."""
    missing = []
    for number in _numbers(ev):
        text = escape(fmt_number(number))
        if not re.search(rf"(?<![\w.+-]){re.escape(text)}(?![\w.])", page):
            missing.append(text)
    return missing


def _check_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "<link" not in page
    external = re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z][\w+.-]*:)?//""", page, re.I)
    assert not external, external
    assert not re.search(r"url\s*\(|@import", page, re.I)
    for href in re.findall(r"""href\s*=\s*["']([^"']*)""", page):
        assert href.startswith("#"), href
    images = re.findall(r"<img\b[^>]*>", page)
    for img in images:
        assert re.search(r'\ssrc="data:image/png;base64,[A-Za-z0-9+/=]+"', img), img[:120]
    assert len(re.findall(r"\ssrc=", page)) == len(images)


def _page_of(run: Path) -> tuple[str, dict[str, Any]]:
    return (run / "report.html").read_text(), json.loads((run / "results.json").read_text())


def test_train_writes_a_self_contained_report_with_every_number(runs: dict[str, Path]) -> None:
    page, results = _page_of(runs["simclr"])
    _check_self_contained(page)
    assert not _missing_numbers(page, results["eval"])
    assert len(list(_numbers(results["eval"]))) > 300  # confusion matrices, probes, few-label draws...
    for text in ("training curves", "results against the baselines", "random_init", "raw_pixels",
                 "embedding tsne", "nearest neighbors", "collapse diagnostics", "eff_rank", "name: digits-simclr"):
        assert escape(text) in page, text
    # curves from train_log.csv, accuracy against the baselines as bars, one confusion heat map per
    # encoder (its probes side by side, classes named), the t-SNE map and the neighbour grid
    alts = re.findall(r'<img src="data:image/png;base64,[^"]{2000,}" alt="([^"]*)"', page)
    assert alts == ["curves of train_log.csv", "accuracy against the baselines", "confusion matrices of ssl",
                    "confusion matrices of random_init", "confusion matrices of raw_pixels", "embedding_tsne",
                    "nearest_neighbors"]
    assert results["eval"]["class_names"] == [str(i) for i in range(10)]
    # the matrices' counts are folded away below the pictures, not spread over the page
    folded = page.split("<summary>confusion matrices as counts")
    assert len(folded) == 2 and 'class="matrix"' not in folded[0] and folded[1].count('class="matrix"') == 6
    _check_training_record(page, results, "images")


def _check_training_record(page: str, results: dict[str, Any], unit: str) -> None:
    """The speed of training: results.json's throughput with its unit (once images_per_sec)."""
    train = results["train"]
    assert train["unit"] == unit and train["throughput"] > 0 and "images_per_sec" not in train
    assert f"<th>unit</th><td>{unit}</td>" in page and not _missing_numbers(page, {"throughput": train["throughput"]})


@pytest.mark.parametrize("name", ["lightgcn", "simcse"])
def test_recsys_and_text_runs_get_a_report_too(runs: dict[str, Path], name: str) -> None:
    page, results = _page_of(runs[name])
    _check_self_contained(page)
    assert not _missing_numbers(page, results["eval"])
    assert escape(results["config"]["method"]["name"]) in page
    expected = {"lightgcn": ["popularity", "ndcg@10", "validation_log.csv"], "simcse": ["STS spearman", "initial"]}[name]
    for text in expected:
        assert escape(text) in page, text
    _check_training_record(page, results, {"lightgcn": "interactions", "simcse": "texts"}[name])


def test_several_runs_side_by_side(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "compare.html"
    assert main(["report", str(runs["simclr"]), str(runs["simclr-t05"]), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    page = out.read_text()
    _check_self_contained(page)
    comparison = page[page.index('<section id="comparison">') : page.index('<section id="run-1">')]
    for text in ("simclr", "simclr-t05", "method.temperature", "train.max_steps", "eval.enabled",
                 "eval.encoders.ssl.knn.accuracy", "train.final_loss", "train.throughput", "train.unit"):
        assert f">{text}<" in comparison, text
    assert "model.width" not in comparison  # only the keys that differ
    assert "not evaluated" in page  # the second run was trained with --no-eval
    _, results = _page_of(runs["simclr"])
    assert not _missing_numbers(page, results["eval"])

    # a run folder of an older contrastkit, whose results.json has images_per_sec: still compared
    from contrastkit.report.build import headline_values, read_run_files

    _, newer = _page_of(runs["simclr-t05"])
    train = {k: v for k, v in newer["train"].items() if k not in ("throughput", "unit")}
    older = read_run_files(runs["simclr-t05"], "older", results={**newer, "train": {**train, "images_per_sec": 123.5}})
    row = headline_values(older)
    assert row["train.images_per_sec"] == 123.5 and "train.throughput" not in row
    assert headline_values(read_run_files(runs["simclr-t05"], "newer"))["train.unit"] == "images"


def test_interrupted_run_and_evaluate_refreshes_the_report(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a run cut before it finished: config and a few log rows, the last one half-written
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copy(runs["simclr"] / "config.yaml", cut / "config.yaml")
    log = (runs["simclr"] / "train_log.csv").read_text().splitlines()
    (cut / "train_log.csv").write_text("\n".join([*log[:3], log[3][:20]]))
    assert main(["report", str(cut)]) == 0
    page = (cut / "report.html").read_text()
    _check_self_contained(page)
    assert "no results.json" in page and "interrupted (last logged step 3)" in page and "<img" in page

    # evaluate again without baselines: the report follows the new results
    run = tmp_path / "again"
    shutil.copytree(runs["simclr"], run)
    assert "random_init" in (run / "report.html").read_text()
    sets = ["--set", "eval.baselines=false", "--set", "eval.plots=false", "--set", "eval.few_label_shots=[1]"]
    assert main(["evaluate", str(run), *sets]) == 0
    assert f"report:  {run / 'report.html'}" in capsys.readouterr().out
    page, results = _page_of(run)
    assert "random_init" not in page and not _missing_numbers(page, results["eval"])


def test_a_failing_report_costs_nothing_but_a_warning(runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import contrastkit.report.build as build

    def broken(*args: Any) -> str:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(build, "build_html", broken)
    with pytest.warns(RuntimeWarning, match=r"could not write .*report.html: disk on fire$"):
        assert refresh_run_report(runs["simclr"], verbose=False) is None


def test_bad_input_is_one_line(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad_yaml = tmp_path / "bad"
    bad_yaml.mkdir()
    (bad_yaml / "config.yaml").write_text("task: [unclosed\n")
    cases = {
        "does not exist": [str(tmp_path / "nope")],
        "is not a contrastkit run folder (no config.yaml)": [str(tmp_path)],
        "is not valid YAML": [str(bad_yaml)],
        "needs --out FILE": [str(runs["simclr"]), str(runs["lightgcn"])],
        "is listed twice": [str(runs["simclr"]), str(runs["simclr"]), "--out", str(tmp_path / "r.html")],
        "is a folder": [str(runs["simclr"]), "--out", str(tmp_path)],
    }
    for expected, args in cases.items():
        assert main(["report", *args]) == 2, expected
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("contrastkit: error: ") and expected in err[0], (expected, err)
