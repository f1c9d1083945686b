"""contrastkit prepare: image stores on disk, memory-mapped for training."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from contrastkit.cli import main
from contrastkit.data.image import load_image_dataset
from contrastkit.data.image.decode import decode_bytes
from contrastkit.data.image.store import StoreInterrupted, open_store, prepare_store
from contrastkit.errors import UserError
from contrastkit.recipes import load_config
from contrastkit.runner import train_run

from ..conftest import tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")


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
    # the statistics come from the manifest (computed while hashing) and equal a float64 pass
    assert data._stats is not None and manifest["splits"]["train"]["mean"] == list(data.mean())
    pixels = direct.images.to(torch.float64) / 255
    assert data.mean() == pytest.approx(pixels.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert data.std() == pytest.approx(pixels.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-12)
    assert (tmp_path / "store" / ".verified.json").is_file()  # prepare hashed the files: no second hash

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


def test_rows_are_read_from_the_file_equal_to_the_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from contrastkit.data.image import mapped
    from contrastkit.data.image.store import write_store

    rng = np.random.default_rng(1)
    write_store(tmp_path / "s", {"train": [(rng.integers(0, 256, (50, 3, 5, 5), dtype=np.uint8), np.zeros(50))]})
    images = open_store(tmp_path / "s").images
    rows = torch.tensor([0, 3, 3, 17, 49])
    expected = images.index_select(0, rows)
    assert torch.equal(mapped.take(images, rows), expected)
    monkeypatch.delattr(mapped.os, "preadv")  # the plain pread path (platforms without preadv)
    assert torch.equal(mapped.take(images, rows), expected)
    assert mapped.read_rows(expected, rows[:2]) is None  # not a mapping: index_select
    assert torch.equal(mapped.take(expected, torch.tensor([4, 0])), expected[[4, 0]])


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
    assert "does not exist" in _err(capsys)
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
    capsys.readouterr()
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    assert "knn" in json.dumps(a["eval"])
    # the same training on the digits in memory (the one loop alone: no evaluation, no report)
    (tmp_path / "b").mkdir()
    b, _ = train_run(load_config(None, tiny_overrides(**{"train.max_steps": 3})), tmp_path / "b", progress=False,
                     verbose=False)
    assert a["train"]["final_loss"] == pytest.approx(b.final_loss, rel=1e-6)


# ----------------------------------------------------------------------------- tar shards


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _png(rng: np.random.Generator, gray: bool = False) -> bytes:
    h, w = int(rng.integers(10, 20)), int(rng.integers(10, 20))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w) if gray else (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _shards(root: Path, per_class: int = 4, gray: bool = False) -> tuple[Path, Path]:
    """The same images as class subfolders (folder/a/00.png …) and as 3 WebDataset shards
    (shards/train-000.tar …, class names in .cls, the folder's order), each with one corrupt file;
    shard 1 also holds a sample without an image."""
    rng = np.random.default_rng(3)
    folder, shards = root / "folder", root / "shards"
    shards.mkdir(parents=True)
    for s, c in enumerate(("a", "b", "c")):
        (folder / c).mkdir(parents=True)
        with tarfile.open(shards / f"train-{s:03d}.tar", "w") as tar:
            for i in range(per_class):
                data = _png(rng, gray)
                (folder / c / f"{i:02d}.png").write_bytes(data)
                _add(tar, f"{c}/{i:02d}.png", data)
                _add(tar, f"{c}/{i:02d}.cls", c.encode())
            (folder / c / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
            _add(tar, f"{c}/zz.png", b"\x89PNG\r\n\x1a\nbroken")
            _add(tar, f"{c}/zz.cls", c.encode())
            if s == 1:
                _add(tar, "lonely.cls", b"b")
    return folder, shards


def _prepared(src: str, out: Path, **kw: object) -> dict[str, object]:
    return prepare_store(src, out, size=12, progress=False, **kw)  # type: ignore[arg-type]


def test_tar_shards_equal_the_folder(tmp_path: Path) -> None:
    folder, shards = _shards(tmp_path)
    manifest = _prepared(str(shards / "train-{000..002}.tar"), tmp_path / "s", workers=0)
    _prepared(str(folder), tmp_path / "f", workers=0)
    assert manifest["source_kind"] == "shards" and manifest["classes"] == ["a", "b", "c"]
    rec = manifest["splits"]["train"]  # type: ignore[index]
    assert rec["count"] == 12 and rec["corrupt"] == 4  # 3 undecodable images, 1 sample without one
    listed = manifest["shards"]  # type: ignore[index]
    assert [s["name"] for s in listed] == ["train-000.tar", "train-001.tar", "train-002.tar"]
    for entry in listed:
        path = shards / entry["name"]
        assert entry["bytes"] == path.stat().st_size
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [s["imageless"] for s in listed] == [0, 1, 0]
    # the same pixels, labels and classes as the folder's store, byte for byte
    a, b = _files(tmp_path / "s"), _files(tmp_path / "f")
    assert a["train.images.u8"] == b["train.images.u8"] and a["train.labels.npy"] == b["train.labels.npy"]
    # a folder of shards is the same source; gray images give one channel, as a gray folder does
    gray_folder, gray_shards = _shards(tmp_path / "gray", per_class=2, gray=True)
    g = _prepared(str(gray_shards), tmp_path / "gs", workers=0)
    _prepared(str(gray_folder), tmp_path / "gf", workers=0)
    assert g["channels"] == 1 and _files(tmp_path / "gs")["train.images.u8"] == _files(tmp_path / "gf")["train.images.u8"]
    # PPM and BMP members (decoded by PIL) give the pixels the PNG decoder gives
    rgb = np.random.default_rng(4).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    encoded = {}
    for fmt in ("PNG", "PPM", "BMP"):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, fmt)
        encoded[fmt.lower()] = decode_bytes(buf.getvalue(), fmt.lower())
    assert encoded["png"] is not None and encoded["png"].shape == (3, 9, 7)
    assert torch.equal(encoded["png"], encoded["ppm"]) and torch.equal(encoded["png"], encoded["bmp"])
    # a damaged archive keeps the samples before the damage and says so
    whole = (shards / "train-002.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(whole[:3000])
    cut = _prepared(str(tmp_path / "cut.tar"), tmp_path / "c", workers=0)
    assert cut["splits"]["train"]["count"] >= 1 and "error" in cut["shards"][0]  # type: ignore[index]


def test_shard_labels_come_from_cls_and_txt_is_a_caption(tmp_path: Path) -> None:
    """.cls (an integer or a name) and .label are labels; .txt is a caption (WebDataset, open_clip),
    ignored beside them and read as a class name, with a deprecation warning, only when a store
    has no other labels."""
    rng = np.random.default_rng(5)

    def shard(path: Path, members: list[dict[str, bytes]]) -> Path:
        with tarfile.open(path, "w") as tar:
            for i, extra in enumerate(members):
                _add(tar, f"{i:03d}.png", _png(rng))
                for ext, data in extra.items():
                    _add(tar, f"{i:03d}.{ext}", data)
        return path

    captions = shard(tmp_path / "captions.tar", [
        {"cls": b"1", "txt": b"a photo of a cat"}, {"cls": b"0", "txt": b"a dog on grass"}, {"txt": b"a cat again"},
    ])
    m = _prepared(str(captions), tmp_path / "c", workers=0)
    assert m["classes"] == ["0", "1"]
    assert np.load(tmp_path / "c" / "train.labels.npy").tolist() == [1, 0, -1]
    names = shard(tmp_path / "names.tar", [{"label": b"dog"}, {"cls": b"cat", "txt": b"a cat"}, {}])
    m = _prepared(str(names), tmp_path / "n", workers=0)
    assert m["classes"] == ["cat", "dog"] and np.load(tmp_path / "n" / "train.labels.npy").tolist() == [1, 0, -1]
    only_txt = shard(tmp_path / "old.tar", [{"txt": b"dog"}, {"txt": b"cat"}])
    with pytest.warns(FutureWarning, match=r"only labels are \.txt members"):
        m = _prepared(str(only_txt), tmp_path / "o", workers=0)
    assert m["classes"] == ["cat", "dog"] and np.load(tmp_path / "o" / "train.labels.npy").tolist() == [1, 0]


def test_tar_shards_resume_after_a_kill(tmp_path: Path) -> None:
    _, shards = _shards(tmp_path)
    _prepared(str(shards), tmp_path / "whole", workers=0)
    with pytest.raises(StoreInterrupted):  # stopped after the first shard
        _prepared(str(shards), tmp_path / "resumed", workers=0, stop_after=1)
    progress = json.loads((tmp_path / "resumed" / ".progress.json").read_text())
    assert progress["splits"]["train"]["done"] == 1
    # killed while appending the second shard: partial rows and label lines past the progress
    with open(tmp_path / "resumed" / "train.images.u8", "ab") as fh:
        fh.write(b"\1" * 1000)
    with open(tmp_path / "resumed" / "train.labels.jsonl", "ab") as fh:
        fh.write(b'"a"\n"b')
    _prepared(str(shards), tmp_path / "resumed", workers=0)
    assert _files(tmp_path / "resumed") == _files(tmp_path / "whole")


# The memory tests measure in a child forked from this process (its imports already done, so a
# few seconds cheaper than a new interpreter): the resident memory of the child, split into
# anonymous memory (tensors, Python) and the pages of the test's store mapped into it, watched
# every 2 ms while the measured call runs.


def _kib(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith(field + ":"))


def _store_ranges(folder: str) -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of the images of the store in ``folder``."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(".images.u8") and f"{folder}/" in line:
            lo, hi = line.split()[0].split("-")
            ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


def _resident_kib(pagemap: Any, ranges: list[tuple[int, int]]) -> int:
    """KiB of ``ranges`` resident in this process (the present bit of /proc/self/pagemap: what
    smaps counts as Rss, read without smaps' cost)."""
    page = os.sysconf("SC_PAGE_SIZE")
    present = 0
    for lo, hi in ranges:
        pagemap.seek(lo // page * 8)
        entries = np.frombuffer(pagemap.read((hi - lo) // page * 8), dtype=np.uint64)
        present += int((entries >> np.uint64(63)).sum())
    return present * page // 1024


def _watched(folder: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, dict[str, float]]:
    """``fn(*args, **kwargs)`` and the peaks of anonymous memory growth and of the store's pages
    (its mappings looked up every 20 ms)."""
    import resource
    import threading
    import time

    peaks = {"anon": 0, "store": 0}
    done = threading.Event()

    def watch() -> None:
        ranges: list[tuple[int, int]] = []
        with open("/proc/self/pagemap", "rb", buffering=0) as pagemap:
            for n in itertools.count():
                if done.is_set():
                    break
                if n % 10 == 0:
                    ranges = _store_ranges(folder)
                peaks["anon"] = max(peaks["anon"], _kib("RssAnon"))
                peaks["store"] = max(peaks["store"], _resident_kib(pagemap, ranges))
                time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    anon_before, rss_before = _kib("RssAnon"), _kib("VmRSS")
    watcher.start()
    out = fn(*args, **kwargs)
    done.set()
    watcher.join()
    return out, {
        "anon_growth_mib": (peaks["anon"] - anon_before) / 1024,
        "store_pages_mib": peaks["store"] / 1024,
        "maxrss_growth_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024,
    }


def _forked(fn: Callable[[], dict[str, Any]], timeout: float = 300.0) -> dict[str, Any]:
    """``fn()`` in a child forked from this process (one thread), its JSON answer read back."""
    import signal
    import time
    import traceback

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read)
            torch.set_num_threads(1)
            os.write(write, json.dumps(fn()).encode())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write)
    chunks, deadline = [], time.monotonic() + timeout
    with os.fdopen(read, "rb") as pipe:
        chunks.append(pipe.read())  # until the child exits (it holds the only write end)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("the measured child did not finish")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0, "the measured child failed (its traceback is above)"
    out: dict[str, Any] = json.loads(b"".join(chunks))
    return out


def _measure_training(run: Path, store: Path, overrides: list[str]) -> dict[str, Any]:
    from contrastkit.recipes import load_config
    from contrastkit.runner import train_run

    # warm-up: two steps (kernels, optimiser state), then the measured run in a new folder
    (run / "warm").mkdir()
    (run / "r").mkdir()
    train_run(load_config(None, [*overrides, "train.max_steps=2"]), run / "warm", progress=False, verbose=False)
    (summary, _), mem = _watched(str(store), train_run, load_config(None, overrides), run / "r", progress=False,
                                 verbose=False)
    return {**mem, "steps": summary.steps}


def _measure_evaluation(run: Path, store: Path, budget: int, overrides: list[str]) -> dict[str, Any]:
    import contrastkit.tasks.image as image
    from contrastkit.recipes import apply_overrides, read_run_config
    from contrastkit.runner import open_run

    image.RAW_PIXEL_BUDGET = budget  # the child's own copy of the module
    cfg = apply_overrides(read_run_config(run), overrides)
    # warm-up on 50 + 50 images of the same store: code pages, kernels and caches of every step are
    # then resident, so what grows below is the data (a warm-up peak still counts in ru_maxrss)
    open_run(apply_overrides(cfg, ["eval.max_train_samples=50", "eval.max_test_samples=50"]), run).evaluate(verbose=False)
    ev, mem = _watched(str(store), open_run(cfg, run).evaluate, verbose=False)
    return {**mem, "eval": ev}


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc (Linux)")
def test_train_from_a_store_several_times_a_memory_cap_stays_under_it(tmp_path: Path) -> None:
    """Training reads rows of the store at random, with pread rather than through the map, so the
    process holds a batch, not the store, however many rows training has read. The store (59 MiB
    of uint8 pixels, 234 MiB as float) is ~4x the cap; 60 steps of 32 rows read 1,920 rows at
    random, which read through the map would map nearly all of it (the kernel maps the cached
    neighbours of each faulting row too: measured 58.5 MiB)."""
    from contrastkit.data.image.store import write_store

    cap_mib, n, size = 16, 20_000, 32
    rng = np.random.default_rng(0)
    chunks = ((rng.integers(0, 256, (4000, 3, size, size), dtype=np.uint8), np.arange(4000) % 10) for _ in range(n // 4000))
    test = [(rng.integers(0, 256, (100, 3, size, size), dtype=np.uint8), np.arange(100) % 10)]
    write_store(tmp_path / "s", {"train": chunks, "test": test}, classes=[f"c{i}" for i in range(10)])
    store_mib = n * 3 * size * size / 2**20
    assert store_mib > 3.5 * cap_mib
    sets = tiny_overrides(**{"train.max_steps": 60, "train.batch_size": 32, "model.encoder": "convnet5", "model.width": 2})
    out = _forked(lambda: _measure_training(tmp_path, tmp_path / "s", [*sets, "data.name=store", f"data.root={tmp_path / 's'}"]))
    print(f"training on a {store_mib:.0f} MiB store: at most {out['store_pages_mib']:.1f} MiB of it mapped, "
          f"anonymous memory grew {out['anon_growth_mib']:.1f} MiB")
    assert out["steps"] == 60
    assert out["store_pages_mib"] + out["anon_growth_mib"] < cap_mib, out


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc (Linux)")
def test_evaluate_a_store_streams_under_a_memory_cap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Evaluation of a store whose float pixels are 3.5x a cap (its uint8 pixels near it) stays
    under the cap: features block by block from the memory map, its pages given back, the
    raw-pixel baseline on a sample."""
    cap_mib, size = 32, 128
    store = tmp_path / "s"
    assert main(["prepare", "digits", "--out", str(store), "--size", str(size), "--workers", "0", "--quiet"]) == 0
    n = sum(r["count"] for r in json.loads((store / "manifest.json").read_text())["splits"].values())
    float_mib = n * size * size * 4 / 2**20
    assert float_mib > 3.5 * cap_mib  # 1797 images: 112 MiB of float pixels, 28 MiB as uint8
    # trained on a 32 px store of the same images (the encoder does not depend on the size; one
    # training step is all the evaluation needs), evaluated on the 128 px one
    assert main(["prepare", "digits", "--out", str(tmp_path / "s32"), "--size", "32", "--workers", "0", "--quiet"]) == 0
    cheap = {"train.max_steps": 1, "train.batch_size": 16, "model.encoder": "convnet5", "model.width": 2}
    sets = [x for o in tiny_overrides(**cheap) for x in ("--set", o)]
    store_sets = ["--set", "data.name=store", "--set", f"data.root={tmp_path / 's32'}"]
    assert main(["train", *sets, *store_sets, "--no-eval", "--quiet", "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    quick = [f"data.root={store}", "eval.batch_size=16", "eval.plots=false", "eval.few_label_shots=[1]",
             "eval.few_label_draws=1", "eval.linear_probe=false"]
    out = _forked(lambda: _measure_evaluation(tmp_path / "r", store, 8 << 20, quick))
    encoders = out["eval"]["encoders"]
    assert set(encoders) == {"ssl", "random_init", "raw_pixels"}
    assert 0.1 < encoders["ssl"]["knn"]["accuracy"] <= 1.0
    sampled = encoders["raw_pixels"]["sampled"]  # 8 MiB of float pixels: ~80 of the 1797 images
    assert sampled["train"] + sampled["test"] == pytest.approx((8 << 20) / (size * size * 4), abs=3)
    # anonymous memory (copies, features, buffers) and the store's pages mapped into the process:
    # without the streaming, the raw pixels alone would add 112 MiB and the map 28 MiB
    print(f"evaluation of {float_mib:.0f} MiB of float pixels: anonymous memory grew {out['anon_growth_mib']:.1f} MiB, "
          f"at most {out['store_pages_mib']:.1f} MiB of the store mapped, ru_maxrss grew {out['maxrss_growth_mib']:.1f} MiB")
    assert out["anon_growth_mib"] + out["store_pages_mib"] < cap_mib, out
