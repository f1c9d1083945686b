"""The Python API: ``contrastkit.training`` gives the CLI's results.json figures on the same seed,
and a run opened with ``contrastkit.load_run`` encodes, recommends and finds neighbours exactly as
``contrastkit embed`` / ``recommend`` / ``similar`` do, for each kind of run. Tiny runs, trained
once for the module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: nothing from a hub

import contrastkit
from contrastkit.cli import main
from contrastkit.errors import UserError

from .conftest import tiny_overrides
from .recsys_helpers import tiny_recsys_overrides, write_tiny_movielens
from .text_helpers import quick_runs, tiny_clip_sets, tiny_text_sets, write_text_data


def _cli_train(out: Path, *argv: str) -> Path:
    assert main(["train", "--out", str(out), "--quiet", *argv]) == 0
    return out


def _sets(overrides: list[str]) -> list[str]:
    return [x for pair in overrides for x in ("--set", pair)]


def _pairs(sets: list[str]) -> list[str]:
    """--set A --set B → [A, B]."""
    return [sets[i + 1] for i in range(0, len(sets), 2) if sets[i] == "--set"]


@pytest.fixture(scope="module", autouse=True)
def _quick() -> Iterator[None]:
    with quick_runs():
        yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("api")
    text = write_text_data(root / "text")
    ml = write_tiny_movielens(root / "ml")
    image = tiny_overrides(**{"train.max_steps": 4, "eval.baselines": False, "eval.few_label_shots": "[1]"})
    return {
        "root": root,
        "corpus": text["corpus"],
        # the same image run twice: from Python (evaluated) and from the command line
        "image": contrastkit.train(overrides=image, out=root / "image", progress=False),
        "image_cli": _cli_train(root / "image_cli", *_sets(image)),
        "text": contrastkit.train(overrides=_pairs(tiny_text_sets(text, **{"train.max_steps": 2})), out=root / "text_run",
                                  evaluate=False, progress=False),
        "clip": contrastkit.train(overrides=_pairs(tiny_clip_sets(**{"train.max_steps": 2})), out=root / "clip",
                                  evaluate=False, progress=False),
        "recsys": contrastkit.train("ml100k-lightgcn", overrides=tiny_recsys_overrides(ml, **{"train.epochs": 1}),
                                    out=root / "recsys", evaluate=False, progress=False),
    }


def _figures(results: Any) -> Any:
    """Results as results.json holds them, without the timings."""
    if isinstance(results, dict):
        return {str(k): _figures(v) for k, v in results.items() if k != "seconds"}
    if isinstance(results, list | tuple):
        return [_figures(v) for v in results]
    return results


def _embed(run: Path, data: str, out: Path) -> np.ndarray:
    assert main(["embed", str(run), "--data", data, "--out", str(out)]) == 0
    return np.load(out)


def test_python_train_gives_the_cli_figures(runs: dict[str, Any]) -> None:
    ours, cli = runs["image"].results, contrastkit.load_run(runs["image_cli"]).results
    assert ours["train"]["final_loss"] == cli["train"]["final_loss"]
    figures = [_figures(r["eval"]["encoders"]["ssl"]) for r in (ours, cli)]
    assert figures[0] == figures[1] and "linear_probe" in figures[0]
    assert repr(runs["image"]) == f"Run({str(runs['root'] / 'image')!r}, task='image', method='simclr')"


def test_image_run_encodes_what_embed_writes_from_any_input(runs: dict[str, Any], tmp_path: Path) -> None:
    from contrastkit.data.image.spec import load_split

    run = contrastkit.load_run(runs["root"] / "image")
    want = _embed(run.path, "digits:test", tmp_path / "test.npy")
    images = load_split(run.config.data, "test").images  # uint8 (N, 1, 8, 8), as embed reads them
    assert images.shape[1:] == (1, 8, 8)
    got = run.encode(images).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    # one image in each form a user may hold: a file, a PIL image, a numpy array, a float tensor
    first = images[0, 0].numpy()
    Image.fromarray(first).save(tmp_path / "first.png")
    forms = [str(tmp_path / "first.png"), Image.fromarray(first), first, images[0].float() / 255, images[:1]]
    for form in forms:
        np.testing.assert_allclose(run.encode(form).numpy(), want[:1], atol=1e-6, err_msg=type(form).__name__)
    # an RGB image of another size is made gray and resized, like a query file
    rgb = np.repeat(np.kron(first, np.ones((4, 4), dtype=np.uint8))[..., None], 3, axis=2)  # (32, 32, 3)
    assert run.encode([rgb, first]).shape == (2, want.shape[1])
    with pytest.raises(UserError, match=r"^float images must be in \[0, 1\]; these range over \[0, 255\]$"):
        run.encode(images.float())
    with pytest.raises(UserError, match=r"^cannot encode a dict as images; give image file paths"):
        run.encode({"image": first})


def test_text_and_image_text_runs_encode_what_embed_writes(runs: dict[str, Any], tmp_path: Path) -> None:
    text = runs["text"]
    want = _embed(text.path, str(runs["corpus"]), tmp_path / "corpus.npy")
    lines = (tmp_path / "corpus.texts.txt").read_text().splitlines()
    np.testing.assert_allclose(text.encode(lines[:50]).numpy(), want[:50], atol=1e-6)
    assert text.encode(lines[0]).shape == (1, want.shape[1])

    clip = runs["clip"]
    captions = ["a photo of the digit 3", "a photo of the digit 7"]
    (tmp_path / "captions.txt").write_text("\n".join(captions) + "\n")
    want_text = _embed(clip.path, str(tmp_path / "captions.txt"), tmp_path / "captions.npy")
    np.testing.assert_allclose(clip.encode_text(captions).numpy(), want_text, atol=1e-6)
    want_images = _embed(clip.path, "digits:test", tmp_path / "digits.npy")
    from contrastkit.data.image.spec import load_split

    images = load_split(clip.config.data, "test").images[:20]
    np.testing.assert_allclose(clip.encode_image(images).numpy(), want_images[:20], atol=1e-6)
    with pytest.raises(UserError, match=r"^an image–text run has two encoders: use run.encode_image"):
        clip.encode(captions)


def test_recommendation_run_answers_as_the_cli_does(
    runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = runs["recsys"]
    _embed(run.path, "all", tmp_path / "all.npz")
    saved = np.load(tmp_path / "all.npz")
    np.testing.assert_array_equal(run.user_vectors.numpy(), saved["user_embeddings"])
    np.testing.assert_array_equal(run.item_vectors.numpy(), saved["item_embeddings"])
    assert run.user_ids == saved["user_ids"].tolist() and run.item_ids == saved["item_ids"].tolist()
    user, item = run.user_ids[0], run.item_ids[0]
    capsys.readouterr()
    assert main(["recommend", str(run.path), "--user", user, "--k", "3"]) == 0
    shown = [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]]
    assert [row["item"] for row in run.recommend(user, k=3)] == shown
    assert main(["similar", str(run.path), "--item", item, "--k", "3"]) == 0
    shown = [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]]
    assert [row["item"] for row in run.similar(item, k=3)] == shown
    # what the run's task does not offer: one line naming the tasks that do
    with pytest.raises(UserError, match=r"^contrastkit encode works on runs of task image / image_text / text"):
        run.encode(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(UserError, match=r"^contrastkit recommend works on runs of task recsys / sequences; "
                                        r"this run's task is 'image'"):
        runs["image"].recommend("1")
    with pytest.raises(UserError, match=r"^k must be a positive integer, got 0$"):
        run.recommend(user, k=0)


def test_evaluate_export_and_report_from_python(runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = contrastkit.load_run(runs["root"] / "image")
    before = run.results["eval"]["encoders"]["ssl"]
    again = run.evaluate(verbose=False, report=False)["encoders"]["ssl"]
    assert _figures(again) == _figures(before)
    out = run.export("arrays", tmp_path / "digits.npz", data="digits:test", verbose=True)
    assert out == tmp_path / "digits.npz" and np.load(out)["embeddings"].shape[0] == 360
    assert "digits.npz" in capsys.readouterr().out
    page = run.report(tmp_path / "report.html")
    assert page.is_file() and "simclr" in page.read_text()
