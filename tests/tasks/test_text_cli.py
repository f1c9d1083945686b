"""The command line end to end for text, image–text and image runs: train → index → search →
embed → evaluate. Each run is trained once, in-process (module fixtures), and every command
after training works on it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("faiss")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: nothing from a hub
pytest.importorskip("transformers")

from contrastkit.cli import main

from ..conftest import tiny_overrides
from ..text_helpers import make_corpus, quick_runs, tiny_clip_sets, tiny_text_sets, write_text_data

pytestmark = pytest.mark.usefixtures("one_thread")

SIMCSE_STEPS = 16  # at lr 3e-3: STS Spearman 0.757 → 0.835 on the generated pairs


@pytest.fixture(scope="module", autouse=True)
def _quick_runs() -> Iterator[None]:
    with quick_runs():
        yield


def _train(argv: list[str]) -> str:
    """`contrastkit train ARGV` in this process; what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["train", *argv])
    assert code == 0, out.getvalue()[-2000:]
    return out.getvalue()


@pytest.fixture(scope="module")
def simcse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path], str]:
    """Unsupervised SimCSE on the generated corpus, evaluated on its STS pairs: the run, the
    data files and what train printed."""
    root = tmp_path_factory.mktemp("simcse")
    paths = write_text_data(root / "data")
    run = root / "run"
    sets = tiny_text_sets(paths, **{"optim.lr": 0.003, "train.max_steps": SIMCSE_STEPS, "train.log_every": 4,
                                    "train.checkpoint_every": SIMCSE_STEPS})
    return run, paths, _train([*sets, "--out", str(run)])


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """CLIP on digits with captions from two templates, evaluated zero-shot and by retrieval."""
    run = tmp_path_factory.mktemp("clip") / "run"
    sets = tiny_clip_sets(**{"text.caption_templates": "['a photo of a {label}', 'a {tone} {label}']",
                             "train.max_steps": 24, "train.checkpoint_every": 24, "optim.lr": 0.003})
    return run, _train([*sets, "--out", str(run)])


# ----------------------------------------------------------------------------- text


def test_simcse_run_improves_sts(simcse: tuple[Path, dict[str, Path], str]) -> None:
    run, _, printed = simcse
    assert "STS spearman" in printed and "texts/s" in printed
    results = json.loads((run / "results.json").read_text())
    assert results["train"]["unit"] == "texts" and results["train"]["throughput"] > 0
    enc = results["eval"]["encoders"]
    trained, initial = enc["trained"]["sts"]["spearman"], enc["initial"]["sts"]["spearman"]
    assert trained > initial + 0.03, (trained, initial)
    log = (run / "train_log.csv").read_text().splitlines()
    assert log[0].split(",")[:2] == ["step", "epoch"] and "texts_per_sec" in log[0]
    assert [row.split(",")[0] for row in log[1:]] == ["4", "8", "12", "16"]  # a row every 4 of 16 steps
    assert (run / "text_encoder" / "model.safetensors").is_file()


def test_index_then_search_the_corpus(simcse: tuple[Path, dict[str, Path], str], capsys: pytest.CaptureFixture[str]) -> None:
    run, paths, _ = simcse
    assert main(["index", str(run), "--data", str(paths["corpus"])]) == 0
    assert "indexed 1198 text embeddings" in capsys.readouterr().out
    query = make_corpus(1200)[5]
    assert main(["search", str(run), "--query", query, "--k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("text query → text index")
    rank, score, text = lines[1].split(maxsplit=2)
    assert rank == "1" and float(score) > 0.999 and text == query
    assert len(lines) == 4


def test_embed_a_column_and_evaluate_again(
    simcse: tuple[Path, dict[str, Path], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, paths, _ = simcse
    feats = tmp_path / "f.npy"
    assert main(["embed", str(run), "--data", str(paths["sts"]) + "#s1", "--out", str(feats)]) == 0
    assert np.load(feats).shape == (200, 32)
    assert (tmp_path / "f.texts.txt").read_text().splitlines() == [
        line.split("\t")[0] for line in paths["sts"].read_text().splitlines()[1:]
    ]
    again = shutil.copytree(run, tmp_path / "again")  # evaluate rewrites results.json
    before = json.loads((run / "results.json").read_text())["eval"]["encoders"]["trained"]
    capsys.readouterr()
    assert main(["evaluate", str(again), "--set", "eval.baselines=false"]) == 0
    assert "trained" in capsys.readouterr().out
    after = json.loads((again / "results.json").read_text())["eval"]["encoders"]
    assert list(after) == ["trained"] and after["trained"]["sts"] == pytest.approx(before["sts"])


def test_supervised_triplets_with_gradcache(tmp_path: Path) -> None:
    paths = write_text_data(tmp_path / "data", n=400)
    sentences = paths["corpus"].read_text().splitlines()
    rows = ["anchor,positive,negative"] + [
        f"{s},{' '.join(s.split()[:5])},{sentences[(i + 7) % len(sentences)]}" for i, s in enumerate(sentences)
    ]
    (tmp_path / "triplets.csv").write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    sets = tiny_text_sets(
        paths,
        **{
            "method.name": "simcse_supervised",
            "text.train_file": str(tmp_path / "triplets.csv"),
            "text.train_columns": "[anchor, positive, negative]",
            "method.gradcache_chunk": 16,
            "text.retrieval_file": str(tmp_path / "triplets.csv"),
            "text.retrieval_columns": "[anchor, positive]",
            "train.batch_size": 32,
            "train.max_steps": 8,
            "train.log_every": 2,
            "train.checkpoint_every": 8,
            "eval.baselines": False,
        },
    )
    assert main(["train", *sets, "--out", str(run), "--quiet"]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["config"]["method"]["gradcache_chunk"] == 16
    retrieval = res["eval"]["encoders"]["trained"]["retrieval"]
    assert retrieval["queries"] == len(sentences) and 0 < retrieval["hit@10"] <= 1
    log = [line.split(",") for line in (run / "train_log.csv").read_text().splitlines()]
    loss = log[0].index("loss")
    assert len(log) == 5 and float(log[-1][loss]) < float(log[1][loss]) - 0.1  # 4.08 → 3.71


# ----------------------------------------------------------------------------- image–text


def test_clip_run_zero_shot_and_retrieval(clip: tuple[Path, str]) -> None:
    run, printed = clip
    assert "zero-shot acc" in printed and "i→t R@1" in printed and "pairs/s" in printed
    ev = json.loads((run / "results.json").read_text())["eval"]["encoders"]
    trained = ev["trained"]
    assert trained["zero_shot"]["num_samples"] == 360 and trained["zero_shot"]["prompts"][0] == "a photo of a 0"
    assert trained["zero_shot"]["accuracy"] > 0.3 > ev["initial"]["zero_shot"]["accuracy"]
    assert 20 < trained["text_to_image"]["queries"] <= 30  # "a {tone} {label}": 10 digits × 3 tones


def test_clip_run_cross_modal_search(clip: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = clip
    assert main(["index", str(run), "--data", "digits:test"]) == 0
    assert "indexed 360 image embeddings" in capsys.readouterr().out
    assert main(["search", str(run), "--query", "a photo of a 7", "--k", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("text query → image index") and len(lines) == 6
    assert sum("[7]" in line for line in lines[1:]) >= 3


# ----------------------------------------------------------------------------- image


def test_image_run_index_and_image_query(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from torchvision.io import write_png

    from contrastkit.data.image import load_image_dataset

    run = tmp_path / "img"
    sets = [x for pair in tiny_overrides(**{"train.max_steps": 1}) for x in ("--set", pair)]
    assert main(["train", *sets, "--out", str(run), "--no-eval", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["index", str(run), "--data", "digits:test", "--kind", "flat"]) == 0
    assert "indexed 360 image embeddings" in capsys.readouterr().out
    test = load_image_dataset("digits", "test")
    png = tmp_path / "q.png"
    write_png(test.images[11], str(png))
    assert main(["search", str(run), "--query", str(png), "--k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("image query → image index")
    assert "digits:test#11" in lines[1] and float(lines[1].split()[1]) > 0.999
    assert main(["search", str(run), "--query", "a photo of a 3"]) == 2
    assert "this is an image run" in capsys.readouterr().err
    assert torch.get_num_threads() == 1


def test_search_mistakes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", str(tmp_path), "--query", "x"]) == 2
    assert "not a contrastkit run folder" in capsys.readouterr().err
    assert main(["index", str(tmp_path), "--data", "x", "--kind", "annoy"]) == 2
    assert "unknown --kind 'annoy'" in capsys.readouterr().err
    bad = ["train", "--set", "task=text", "--set", "method.name=simclr", "--out", str(tmp_path / "r")]
    assert main(bad) == 2
    assert "method.name 'simclr' is a method of task image, not of task text" in capsys.readouterr().err


def _caption_shards(root: Path, images: np.ndarray, labels: np.ndarray, shards: int) -> None:
    """WebDataset-style shards of PNGs with a .txt caption (and a .cls label) each."""
    import tarfile

    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with tarfile.open(root / f"part-{s:03d}.tar", "w") as tar:
            for i in range(s, len(images), shards):
                png = io.BytesIO()
                Image.fromarray(images[i]).save(png, format="PNG")
                files = {"png": png.getvalue(), "txt": f"a photo of the digit {labels[i]}".encode(),
                         "cls": str(labels[i]).encode()}
                for ext, data in files.items():
                    info = tarfile.TarInfo(f"{i:05d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def test_clip_trains_from_caption_shards(tmp_path: Path) -> None:
    """An image–text run from WebDataset shards: the .txt members are its captions (a .cls beside
    them does not turn them into labels), the test shard its retrieval set."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * 15).astype(np.uint8)
    _caption_shards(tmp_path / "train", images[:300], digits.target[:300], shards=2)
    _caption_shards(tmp_path / "test", images[300:360], digits.target[300:360], shards=1)
    sets = tiny_clip_sets(**{"text.train_file": str(tmp_path / "train" / "part-{000..001}.tar"),
                             "text.retrieval_file": str(tmp_path / "test" / "part-000.tar"), "data.image_size": 8})
    run = tmp_path / "run"
    printed = _train([*sets, "--out", str(run)])
    assert "i→t R@1" in printed
    ev = json.loads((run / "results.json").read_text())["eval"]["encoders"]["trained"]
    assert ev["text_to_image"]["queries"] == 10 and ev["text_to_image"]["corpus"] == 60  # 60 test images, 10 captions
    assert "zero_shot" not in ev  # captions, no classes: nothing to prompt zero-shot


def test_compare_rows_are_the_trained_encoders_headline_figures(
    simcse: tuple[Path, dict[str, Path], str], clip: tuple[Path, str]
) -> None:
    """What `contrastkit compare` and a sweep's final table show of a text and an image–text run:
    of the trained encoder's row of the terminal table, STS Spearman, zero-shot accuracy, and per
    retrieval direction the smallest K's R@K and the largest K's nDCG@K (× 100)."""
    from contrastkit.runner import load_run

    for run, wanted in ((simcse[0], [("STS spearman", "sts", "spearman")]),
                        (clip[0], [("zero-shot acc", "zero_shot", "accuracy"), ("i→t R@1", "image_to_text", "hit@1"),
                                   ("i→t nDCG@10", "image_to_text", "ndcg@10"), ("t→i R@1", "text_to_image", "hit@1"),
                                   ("t→i nDCG@10", "text_to_image", "ndcg@10")])):
        results = json.loads((run / "results.json").read_text())
        trained = results["eval"]["encoders"]["trained"]
        row = load_run(run).compare_row(results)
        assert row == {label: f"{100 * trained[sec][key]:.1f}" for label, sec, key in wanted}
        assert load_run(run).compare_row({"train": results["train"]}) == {}  # a run trained with --no-eval
