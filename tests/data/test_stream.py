"""data.stream: an image folder decoded batch by batch in DataLoader workers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from contrastkit.cli import main
from contrastkit.data.image import build_augmentation, default_augmentation, load_image_dataset
from contrastkit.data.image.loader import InMemoryViewLoader
from contrastkit.data.image.stream import StreamViewLoader, open_folder_stream
from contrastkit.errors import UserError
from contrastkit.recipes import load_config
from contrastkit.runner import train_run

from ..conftest import tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")


def _folder(root: Path, per_class: int = 12, classes: tuple[str, ...] = ("a", "b", "c")) -> Path:
    """Class subfolders of 20x24 RGB PNGs (a few gray ones), plus one file with a broken header."""
    rng = np.random.default_rng(1)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            shape = (20, 24) if i % 5 == 0 else (20, 24, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / c / f"{i:02d}.png")
    (root / "b" / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return root


def _loaders(root: Path, workers: int, size: int = 16) -> tuple[InMemoryViewLoader, StreamViewLoader]:
    with pytest.warns(UserWarning, match="corrupt"):
        memory = load_image_dataset("folder", root=str(root), image_size=size)
    with pytest.warns(UserWarning, match="unreadable header"):
        stream = open_folder_stream("train", str(root), size)
    assert stream.files and len(stream) == len(memory) and stream.channels == memory.channels
    assert stream.mean() == memory.mean() and stream.std() == memory.std()  # all files sampled
    assert stream.labels is not None and memory.labels is not None and torch.equal(stream.labels, memory.labels)
    spec = default_augmentation(memory.channels, size)
    aug = build_augmentation(spec, size=size, channels=memory.channels, mean=memory.mean(), std=memory.std())
    common: dict[str, Any] = {"batch_size": 8, "augmentation": aug, "seed": 3, "labels": memory.labels}
    return InMemoryViewLoader(memory.images, **common), StreamViewLoader(stream, workers=workers, **common)


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["index"], y["index"]) and torch.equal(x["labels"], y["labels"])
        for vx, vy in zip(x["views"], y["views"], strict=True):
            assert torch.equal(vx, vy)


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_equal_in_memory_and_resume(tmp_path: Path, workers: int) -> None:
    memory, stream = _loaders(_folder(tmp_path / "f"), workers)
    assert len(memory) == len(stream) == 4
    for epoch in (0, 1):
        _same(list(memory.batches(epoch)), list(stream.batches(epoch)))
    # resume mid-epoch: the generator state saved after 2 batches gives the same remaining batches
    state = None
    full = []
    for step, batch in enumerate(stream.batches(2)):
        full.append(batch)
        if step == 1:
            state = stream.state_dict()
    assert state is not None
    _, resumed = _loaders(tmp_path / "f", 0)
    resumed.load_state_dict(state)
    _same(full[2:], list(resumed.batches(2, start=2)))


def test_header_ok_but_pixels_broken_fails_with_the_file_name(tmp_path: Path) -> None:
    root = _folder(tmp_path / "f", per_class=4)
    good = (root / "a" / "01.png").read_bytes()
    (root / "a" / "02.png").write_bytes(good[: len(good) // 2])  # header fine, pixel data cut
    with pytest.warns(UserWarning):
        stream = open_folder_stream("train", str(root), 16)
    with pytest.raises(UserError, match=r"02\.png cannot be decoded"):
        stream.read(list(range(len(stream))))


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_train_and_evaluate_streamed_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "f"
    for split in ("train", "test"):
        _folder(root / split, per_class=16 if split == "train" else 6)
    overrides = tiny_overrides(**{"train.batch_size": 16, "train.max_steps": 4, "data.image_size": 16,
                                  "eval.knn_k": 5, "eval.few_label_shots": "[1]", "eval.plots": False,
                                  "eval.baselines": False, "eval.linear_probe": False, "eval.few_label_draws": 1})
    sets = [x for o in overrides for x in ("--set", o)]
    folder = ["--set", "data.name=folder", "--set", f"data.root={root}"]
    stream = ["--set", "data.stream=true", "--set", "data.workers=2"]
    assert main(["train", *sets, *folder, *stream, "--quiet", "--out", str(tmp_path / "a")]) == 0
    assert "unreadable header" in capsys.readouterr().err
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    assert "knn" in json.dumps(a["eval"])
    # the same training on the folder decoded into memory (the one loop alone: no evaluation, no report)
    (tmp_path / "b").mkdir()
    with pytest.warns(UserWarning, match="corrupt"):
        b, _ = train_run(load_config(None, [*overrides, "data.name=folder", f"data.root={root}"]), tmp_path / "b",
                         progress=False, verbose=False)
    assert a["train"]["final_loss"] == pytest.approx(b.final_loss, rel=1e-5)

    base = ["train", *sets, "--out", str(tmp_path / "x")]
    assert main([*base, "--set", "data.stream=true"]) == 2
    assert "data.stream reads image folders only" in _err(capsys)
    assert main([*base, *folder, "--set", "data.gpu_decode=true"]) == 2
    assert "data.gpu_decode needs data.stream=true" in _err(capsys)
    assert main([*base, *folder, "--set", "data.workers=-1"]) == 2
    assert "data.workers" in _err(capsys)
    if not torch.cuda.is_available():
        assert main([*base, *folder, "--set", "data.stream=true", "--set", "data.gpu_decode=true"]) == 2
        assert "needs a CUDA GPU" in _err(capsys)
