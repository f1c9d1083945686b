"""contrastkit prepare: image stores on disk, memory-mapped for training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastkit.cli import main
from contrastkit.data.image import load_image_dataset
from contrastkit.data.image.store import StoreInterrupted, open_store, prepare_store
from contrastkit.errors import UserError
from tests.conftest import tiny_overrides


def _folder(root: Path, per_class: int = 8) -> Path:
    """Class subfolders a/ b/ c/ of small RGB PNGs of varied shapes, plus one corrupt file."""
    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            h, w = int(rng.integers(10, 20)), int(rng.integers(10, 20))
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / c / f"{i:02d}.png")
    (root / "b" / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return root


def _files(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store.iterdir()) if not p.name.startswith(".")}


def test_prepare_folder_matches_decoding_and_resumes(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src")
    manifest = prepare_store(str(src), tmp_path / "store", size=12, workers=2, progress=False, chunk=5)
    assert manifest["classes"] == ["a", "b", "c"]
    assert manifest["splits"]["train"]["count"] == 24 and manifest["splits"]["train"]["corrupt"] == 1
    assert manifest["channels"] == 3 and manifest["size"] == 12
    data = open_store(tmp_path / "store", "train")
    with pytest.warns(UserWarning, match="corrupt"):
        direct = load_image_dataset("folder", root=str(src), image_size=12)
    assert data.mapped and isinstance(data.images, torch.Tensor)
    assert torch.equal(data.images, direct.images)
    assert data.labels is not None and direct.labels is not None
    assert torch.equal(data.labels, direct.labels) and data.classes == direct.classes

    # interrupted after ~7 images, then run again: the same store as in one go
    with pytest.raises(StoreInterrupted):
        prepare_store(str(src), tmp_path / "resumed", size=12, workers=0, progress=False, chunk=5, stop_after=7)
    assert not (tmp_path / "resumed" / "manifest.json").exists()
    with pytest.raises(UserError, match="interrupted prepare"):
        open_store(tmp_path / "resumed")
    prepare_store(str(src), tmp_path / "resumed", size=12, workers=0, progress=False, chunk=5)
    assert _files(tmp_path / "resumed") == _files(tmp_path / "store")


def test_store_is_a_memory_map(tmp_path: Path) -> None:
    prepare_store("digits:test", tmp_path / "s", workers=0, progress=False)
    data = open_store(tmp_path / "s", "test")
    # the tensor's memory is the file's mapping, not a copy
    ptr, path = data.images.data_ptr(), str((tmp_path / "s" / "test.images.u8").resolve())
    maps = Path("/proc/self/maps")
    if maps.exists():
        spans = [line.split()[0] for line in maps.read_text().splitlines() if line.endswith(path)]
        assert any(int(a, 16) <= ptr < int(b, 16) for a, b in (s.split("-") for s in spans))
    ref = load_image_dataset("digits", "test")
    assert torch.equal(data.images, ref.images) and data.labels is not None
    assert ref.labels is not None and torch.equal(data.labels, ref.labels)
    assert data.mean() == pytest.approx(ref.mean()) and data.std() == pytest.approx(ref.std())
    assert not data.subset(torch.arange(5)).mapped  # a subset is a small resident copy


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_damaged_store_and_bad_source_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", "digits", "--out", str(tmp_path / "s"), "--workers", "0", "--quiet"]) == 0
    assert "train 1437, test 360" in capsys.readouterr().out
    runs = iter(range(10))

    def train() -> int:
        store = ["--set", "data.name=store", "--set", f"data.root={tmp_path / 's'}"]
        return main(["train", *store, "--out", str(tmp_path / f"r{next(runs)}")])

    manifest = tmp_path / "s" / "manifest.json"
    original = manifest.read_text()

    (tmp_path / "s" / "test.images.u8").write_bytes(b"\0" * 23040)  # same size, other bytes
    assert train() == 2 and "sha256" in _err(capsys)
    edited = json.loads(original)
    edited["splits"]["train"]["count"] = 1000
    manifest.write_text(json.dumps(edited))
    assert train() == 2 and "bytes recorded" in _err(capsys)
    manifest.write_text(original)
    with open(tmp_path / "s" / "train.images.u8", "r+b") as fh:
        fh.truncate(100)
    assert train() == 2 and "has 100 bytes" in _err(capsys)
    (tmp_path / "s" / "train.images.u8").unlink()
    assert train() == 2 and "missing" in _err(capsys)
    manifest.unlink()
    assert train() == 2 and "not an image store" in _err(capsys)

    assert main(["prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "neither an image folder nor a data set" in _err(capsys)
    assert main(["prepare", "digits:valid", "--out", str(tmp_path / "x")]) == 2
    assert "split for digits" in _err(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["prepare", str(tmp_path / "empty"), "--out", str(tmp_path / "x")]) == 2
    assert "no image files" in _err(capsys)


def test_train_on_a_store_matches_in_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", "digits", "--out", str(tmp_path / "s"), "--workers", "0", "--quiet"]) == 0
    sets = [x for o in tiny_overrides(**{"train.max_steps": 3}) for x in ("--set", o)]
    store = ["--set", "data.name=store", "--set", f"data.root={tmp_path / 's'}"]
    quick = [x for o in ("eval.baselines=false", "eval.plots=false", "eval.few_label_shots=[1]", "eval.linear_probe=false",
                         "eval.max_train_samples=300", "eval.max_test_samples=100") for x in ("--set", o)]
    assert main(["train", *sets, *store, *quick, "--quiet", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", *sets, "--no-eval", "--quiet", "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert "knn" in json.dumps(a["eval"])
    assert a["train"]["final_loss"] == pytest.approx(b["train"]["final_loss"], rel=1e-6)
