"""The command line end to end for text, image–text and image runs: train → index → search."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: nothing from a hub
pytest.importorskip("transformers")

from contrastkit.cli import main

from ..conftest import tiny_overrides
from ..text_helpers import make_corpus, tiny_text_sets, write_text_data

pytestmark = pytest.mark.usefixtures("one_thread")


def test_simcse_run_improves_sts_then_index_and_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_text_data(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", *tiny_text_sets(paths), "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "STS spearman" in out and "texts/s" in out
    results = json.loads((run / "results.json").read_text())
    enc = results["eval"]["encoders"]
    trained, initial = enc["trained"]["sts"]["spearman"], enc["initial"]["sts"]["spearman"]
    assert trained > initial + 0.03, (trained, initial)
    log = (run / "train_log.csv").read_text().splitlines()
    assert len(log) == 7  # header + a row every 10 of 60 steps
    assert (run / "text_encoder" / "model.safetensors").is_file()

    assert main(["index", str(run), "--data", str(paths["corpus"])]) == 0
    assert "indexed 1198 text embeddings" in capsys.readouterr().out
    query = make_corpus(1200)[5]
    assert main(["search", str(run), "--query", query, "--k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("text query → text index")
    rank, score, text = lines[1].split(maxsplit=2)
    assert rank == "1" and float(score) > 0.999 and text == query
    assert len(lines) == 4

    feats = tmp_path / "f.npy"
    assert main(["embed", str(run), "--data", str(paths["sts"]) + "#s1", "--out", str(feats)]) == 0
    assert np.load(feats).shape == (200, 32)
    assert len((tmp_path / "f.texts.txt").read_text().splitlines()) == 200

    assert main(["evaluate", str(run), "--set", "eval.baselines=false"]) == 0
    assert "trained" in capsys.readouterr().out


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
            "train.max_steps": 20,
            "eval.baselines": False,
        },
    )
    assert main(["train", *sets, "--out", str(run), "--quiet"]) == 0
    res = json.loads((run / "results.json").read_text())
    retrieval = res["eval"]["encoders"]["trained"]["retrieval"]
    assert retrieval["queries"] == len(sentences) and 0 < retrieval["hit@10"] <= 1
    log = [line.split(",") for line in (run / "train_log.csv").read_text().splitlines()]
    loss = log[0].index("loss")
    assert float(log[-1][loss]) < float(log[1][loss])


def test_clip_run_on_digits_zero_shot_and_cross_modal_search(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "clip"
    sets = {
        "task": "image_text", "method.name": "clip", "data.name": "digits",
        "model.encoder": "convnet5", "model.width": 8,
        "text.encoder": "tiny", "text.tiny_width": 32, "text.tiny_layers": 1, "text.max_length": 12,
        "method.embed_dim": 16, "text.caption_templates": "['a photo of a {label}', 'a {tone} {label}']",
        "train.batch_size": 64, "train.max_steps": 40, "train.progress": False,
        "train.checkpoint_every": 20, "optim.lr": 0.003,
    }
    args = [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]
    assert main(["train", *args, "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "zero-shot acc" in out and "i→t R@1" in out
    ev = json.loads((run / "results.json").read_text())["eval"]["encoders"]
    trained = ev["trained"]
    assert trained["zero_shot"]["num_samples"] == 360 and trained["zero_shot"]["prompts"][0] == "a photo of a 0"
    assert trained["zero_shot"]["accuracy"] > 0.3 > ev["initial"]["zero_shot"]["accuracy"]
    assert 20 < trained["text_to_image"]["queries"] <= 30  # "a {tone} {label}": 10 digits × 3 tones
    assert main(["index", str(run), "--data", "digits:test"]) == 0
    assert "indexed 360 image embeddings" in capsys.readouterr().out
    assert main(["search", str(run), "--query", "a photo of a 7", "--k", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("text query → image index") and len(lines) == 6
    assert sum("[7]" in line for line in lines[1:]) >= 3


def test_image_run_index_and_image_query(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from torchvision.io import write_png

    from contrastkit.data.image import load_image_dataset

    run = tmp_path / "img"
    sets = [x for pair in tiny_overrides() for x in ("--set", pair)]
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
