"""Image stores: data sets decoded once into memory-mapped uint8 files (``contrastkit prepare``).

``prepare_store(SOURCE, STORE, size=S, workers=N)`` reads an image folder (flat, one subfolder per
class, with or without ``train/`` ``test/`` … split subfolders, as ``data.name: folder`` reads it),
WebDataset-style tar shards (see contrastkit.data.image.shards) or a named data set (``digits``, ``fashion-mnist``, ``cifar10``, … as ``NAME`` for all its
splits or ``NAME:SPLIT``) and writes, per split:

- ``SPLIT.images.u8``: the images as one raw C-ordered uint8 array (N, C, S, S), no header
  (open with ``np.memmap(path, np.uint8, "r", shape=(N, C, S, S))``);
- ``SPLIT.labels.npy``: int64 labels (N,), -1 everywhere for an unlabeled split;

and, written last and atomically, ``manifest.json``: format and version, the source, the
channels, the size, the class names, the resize rule, per split the image count, the number
of corrupt files skipped and the per-channel pixel mean and std (the normalisation statistics:
training need not pass over the store for them), and per file its size in bytes and sha256.

Resizing (folders): each image is decoded (torchvision, EXIF orientation applied, first frame of
an animation), its shorter side resized to S (bilinear, antialiased, rounded to uint8), then
centre-cropped to S × S; alpha is dropped, and grayscale images are repeated to RGB when any
image of the folder is colour. Exactly what ``data.name: folder`` does, so a store and the folder
give the same pixels. Named data sets are square: they are resized to S × S the same way (the
default S is their own size, i.e. no resize). Folders default to S = 64.

Decoding runs in worker processes, chunk by chunk, and chunks are written in order. After each
chunk, ``.progress.json`` records how many files are done; an interrupted prepare run again on
the same STORE with the same arguments continues from there (tar shards: shard by shard). The
manifest is written at the end (for shards it also lists every shard: name, bytes, sha256, samples,
skipped); until then the store cannot be opened.

``open_store(STORE, split)`` checks the manifest against the files (present, sizes, sha256 — the
hash is checked once and remembered in ``.verified.json`` while the files' sizes and mtimes stay
the same; ``prepare`` writes it, having just hashed the files) and returns an
:class:`ImageDataset` whose images are a read-only memory map: batches read only their rows, so
resident memory stays bounded however large the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrastkit.data.image import mapped
from contrastkit.data.image.datasets import (
    DATASETS,
    IMAGE_EXTENSIONS,
    SPLITS,
    ImageDataset,
    _decode_one,
    _image_files,
    _resize_center_crop,
    _to_channels,
    channel_histogram,
    load_image_dataset,
    stats_from_histogram,
)
from contrastkit.data.image.shards import (
    finish_shards,
    resume_files,
    shard_source,
    shards_plan,
    write_shard_split,
)
from contrastkit.errors import UserError, check_choice

FORMAT = "contrastkit-image-store"
VERSION = 1
MANIFEST = "manifest.json"
PROGRESS = ".progress.json"
VERIFIED = ".verified.json"
FOLDER_SIZE = 64
RESIZE_RULE = (
    "shorter side resized to SIZE (bilinear, antialiased, rounded to uint8), then centre-cropped "
    "to SIZE x SIZE; alpha dropped; gray repeated to RGB when any image is colour"
)
_CHUNK_FILES = 256
_HASH_BLOCK = 1 << 24


class StoreInterrupted(Exception):
    """Raised by ``prepare_store(..., stop_after=K)`` (tests): stopped after K images."""


@dataclass
class _Split:
    name: str
    files: list[Path]  # folder sources; empty for named data sets
    labels: list[int]
    count: int  # files (folder) or images (named) to go through


def images_file(split: str) -> str:
    return f"{split}.images.u8"


def labels_file(split: str) -> str:
    return f"{split}.labels.npy"


# ----------------------------------------------------------------------------- prepare


def prepare_store(
    source: str,
    out: str | Path,
    *,
    size: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    chunk: int = _CHUNK_FILES,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Decode SOURCE into the store folder OUT (see the module docstring); returns the manifest."""
    if size is not None and (isinstance(size, bool) or size < 1):
        raise UserError(f"--size must be a positive integer, got {size!r}")
    if workers is not None and workers < 0:
        raise UserError(f"--workers must be >= 0, got {workers}")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder; expected a new or empty folder")
    if (out / MANIFEST).is_file():
        _refuse_complete(out, source, size)
    started = time.monotonic()
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    plan = _plan(source, size)
    if plan["kind"] != "dataset":
        start_workers(n_workers)  # their server imports while the progress is read
    params = {k: plan[k] for k in ("source", "kind", "size", "channels", "classes", "digest")}
    out.mkdir(parents=True, exist_ok=True)
    state = _resume_state(out, params, plan["splits"])
    done_images = 0
    for split in plan["splits"]:
        left = None if stop_after is None else stop_after - done_images
        if plan["kind"] == "shards":
            done_images += write_shard_split(out, plan, split, state, n_workers, progress, left)
        else:
            done_images += _write_split(out, plan, split, state, n_workers, progress, chunk, left)
    elapsed = time.monotonic() - started
    if plan["kind"] == "shards":
        plan["extra"] = finish_shards(out, plan, state)
    manifest = _finish(out, plan, state)
    manifest["seconds"] = round(elapsed, 3)
    return manifest


def write_store(
    out: str | Path,
    splits: Mapping[str, Iterable[tuple[np.ndarray, np.ndarray]]],
    *,
    classes: Sequence[str] = (),
    source: str = "arrays",
) -> dict[str, Any]:
    """Write a store from images already decoded (generated, or read by your own code): per split
    name, chunks of (uint8 images (n, C, S, S), int64 labels (n,); -1 for unlabeled), every chunk
    of the same C and S. Chunks are appended as they come, so a split may be far larger than
    memory. Not resumable (the chunks are the caller's). Returns the manifest."""
    out = Path(out).expanduser()
    if (out / MANIFEST).is_file():
        raise UserError(f"{out} already holds a store; write to a new folder")
    out.mkdir(parents=True, exist_ok=True)
    shape: tuple[int, ...] | None = None
    state: dict[str, Any] = {"splits": {}}
    for name, chunks in splits.items():
        written = 0
        with open(out / images_file(name), "wb") as fi, open(out / f"{name}.labels.i64", "wb") as fl:
            for images, labels in chunks:
                images = np.ascontiguousarray(images)
                labels = np.asarray(labels, dtype=np.int64)
                if images.dtype != np.uint8 or images.ndim != 4 or images.shape[2] != images.shape[3]:
                    raise ValueError(f"images must be uint8 (n, C, S, S), got {images.dtype} {images.shape}")
                if shape is not None and images.shape[1:] != shape:
                    raise ValueError(f"every chunk must be {shape}, got {images.shape[1:]}")
                if labels.shape != images.shape[:1]:
                    raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
                shape = images.shape[1:]
                fi.write(images.data)
                fl.write(labels.tobytes())
                written += len(images)
        state["splits"][name] = {"written": written, "corrupt": 0}
    if shape is None:
        raise ValueError("no images given")
    plan = {"channels": shape[0], "size": shape[1], "source": source, "kind": "arrays", "classes": list(classes),
            "splits": [_Split(name, [], [], rec["written"]) for name, rec in state["splits"].items()]}
    return _finish(out, plan, state)


def _plan(source: str, size: int | None) -> dict[str, Any]:
    """What to read: tar shards, an image folder or a named data set."""
    shards = shard_source(source)
    if shards is not None:
        return shards_plan(shards, size or FOLDER_SIZE, source)
    folder = Path(source).expanduser()
    if folder.is_dir():
        return _folder_plan(folder, size or FOLDER_SIZE)
    name = source.partition(":")[0]
    if name not in DATASETS and (folder.exists() or "/" in source or folder.suffix):
        what = "is not an image folder nor a .tar shard" if folder.exists() else "does not exist"
        raise UserError(f"SOURCE {source!r} {what}; {_ALLOWED_SOURCES}")
    return _dataset_plan(source, size)


_ALLOWED_SOURCES = (
    "expected an image folder, tar shards (a .tar file, a folder of them, or a pattern like "
    "'shards/train-{000000..000009}.tar'), or a data set NAME[:SPLIT]"
)


def _refuse_complete(out: Path, source: str, size: int | None) -> None:
    """--out is a finished store: say of what, and that another --out is needed."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        held = f"{manifest['source']!r} at --size {manifest['size']}"
    except (OSError, ValueError, KeyError, TypeError):
        held = "another prepare"
    raise UserError(
        f"--out {out} is already a complete store (of {held}); choose a new or empty folder for {source!r}"
        + (f" at --size {size}" if size else "")
    )


def _folder_plan(folder: Path, size: int) -> dict[str, Any]:
    """The splits, files, labels and channels of an image folder (as ``_load_folder`` reads it)."""
    subdirs = {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
    split_names = set(SPLITS["folder"]) - {"all"}
    roots = (
        {name: folder / name for name in sorted(subdirs)}
        if subdirs and subdirs <= split_names
        else {"train": folder}
    )
    per_split: dict[str, list[Path]] = {}
    classes: list[str] = sorted(
        {d.name for r in roots.values() for d in r.iterdir() if d.is_dir() and not d.name.startswith(".")}
    )
    splits: list[_Split] = []
    for name, root in roots.items():
        dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        files: list[Path] = []
        labels: list[int] = []
        if dirs:
            for d in dirs:
                members = _image_files(d, recursive=True)
                files.extend(members)
                labels.extend([classes.index(d.name)] * len(members))
        else:
            files = _image_files(root, recursive=False)
            labels = [-1] * len(files)
        per_split[name] = files
        splits.append(_Split(name, files, labels, len(files)))
    everything = [f for files in per_split.values() for f in files]
    if not everything:
        raise UserError(
            f"image folder {folder} holds no image files ({', '.join(IMAGE_EXTENSIONS)}); "
            f"expected images directly inside it, one subfolder per class, or train/ test/ split folders"
        )
    digest = hashlib.sha256()
    for f in everything:
        st = f.stat()
        digest.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {
        "source": str(folder.resolve()),
        "kind": "folder",
        "size": size,
        "channels": 3 if any(_is_colour(f) for f in everything) else 1,
        "classes": classes,
        "digest": digest.hexdigest(),
        "splits": splits,
    }


def _is_colour(path: Path) -> bool:
    """Whether the file's header says colour (PIL, no decoding); unreadable files count as gray."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode not in ("1", "L", "LA", "I", "I;16", "F", "La")
    except Exception:  # corrupt files are counted when decoded
        return False


def _dataset_plan(source: str, size: int | None) -> dict[str, Any]:
    name, _, split = source.partition(":")
    if name not in DATASETS or name in ("folder", "store"):
        named = [d for d in DATASETS if d not in ("folder", "store")]
        raise UserError(
            f"SOURCE {source!r} is neither an image folder, tar shards nor a data set: {_ALLOWED_SOURCES} "
            f"with NAME one of {', '.join(named)}"
        )
    if split:
        check_choice(f"split for {name}", split, SPLITS[name])
    names = [split] if split else [s for s in SPLITS[name] if "+" not in s]
    loaded = {s: load_image_dataset(name, split=s, image_size=size) for s in names}
    first = next(iter(loaded.values()))
    return {
        "source": source,
        "kind": "dataset",
        "size": first.image_size,
        "channels": first.channels,
        "classes": max((d.classes for d in loaded.values()), key=len),
        "digest": hashlib.sha256(source.encode()).hexdigest(),
        "splits": [_Split(s, [], [], len(d)) for s, d in loaded.items()],
        "loaded": loaded,
    }


def _resume_state(out: Path, params: dict[str, Any], splits: Sequence[_Split]) -> dict[str, Any]:
    """The progress of an earlier, interrupted prepare of the same source, or a fresh start."""
    path = out / PROGRESS
    fresh = {"params": params, "splits": {s.name: {"done": 0, "written": 0, "corrupt": 0} for s in splits}}
    if not path.is_file():
        if any(out.iterdir()):
            raise UserError(
                f"--out {out} is not empty and holds no store or interrupted prepare; choose a new or empty folder"
            )
        return fresh
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({exc}); delete {out} and prepare again") from exc
    if state.get("params") != params:
        held = state.get("params", {})
        raise UserError(
            f"--out {out} holds an interrupted prepare of other settings ({held.get('source')!r} at --size "
            f"{held.get('size')}; source, size or files changed); delete it or choose another --out"
        )
    if params["kind"] == "shards":  # appended files: cut back to the last finished shard
        resume_files(out, state, {"channels": params["channels"], "size": params["size"], "splits": splits})
        return state
    per_row = params["channels"] * params["size"] ** 2
    for s in splits:
        rec = state["splits"][s.name]
        img = out / images_file(s.name)
        if rec["done"] and (not img.is_file() or img.stat().st_size < rec["written"] * per_row):
            raise UserError(f"{img} is shorter than its recorded progress; delete {out} and prepare again")
    return state


def _save_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_split(
    out: Path,
    plan: dict[str, Any],
    split: _Split,
    state: dict[str, Any],
    workers: int,
    progress: bool,
    chunk: int,
    stop_after: int | None,
) -> int:
    """Write one split's images from where the progress file says; returns images written now."""
    from tqdm import tqdm

    rec = state["splits"][split.name]
    image_bytes = plan["channels"] * plan["size"] ** 2
    capacity = max(1, split.count)
    paths = (out / images_file(split.name), out / f"{split.name}.labels.i64")
    if not rec["done"]:  # a new split: both files at full capacity (trimmed by _finish)
        for path, nbytes in zip(paths, (capacity * image_bytes, capacity * 8), strict=True):
            with open(path, "wb") as fh:
                fh.truncate(nbytes)
    # written with pwrite, not through a map: no page faults in this process, which shares the
    # CPU with the decoding workers
    fds = [os.open(path, os.O_RDWR) for path in paths]
    written_now = 0
    bar = tqdm(total=split.count, initial=rec["done"], unit="img", desc=f"prepare {split.name}",
               disable=not progress, dynamic_ncols=True, leave=True)
    try:
        for start, block, block_labels, n_files in _blocks(plan, split, rec["done"], workers, chunk):
            w = rec["written"]
            _pwrite(fds[0], np.ascontiguousarray(block, dtype=np.uint8), w * image_bytes)
            _pwrite(fds[1], np.ascontiguousarray(block_labels, dtype=np.int64), w * 8)
            for fd in fds:  # on disk before the progress file says so
                os.fdatasync(fd)
            rec["done"] = start + n_files
            rec["written"] = w + len(block)
            rec["corrupt"] += n_files - len(block)
            _save_json(out / PROGRESS, state)
            written_now += len(block)
            bar.update(n_files)
            if stop_after is not None and written_now >= stop_after:
                raise StoreInterrupted(f"stopped after {written_now} images")
    finally:
        bar.close()
        for fd in fds:
            os.close(fd)
    return written_now


def _pwrite(fd: int, array: np.ndarray, offset: int) -> None:
    view = memoryview(array.data).cast("B")
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def _blocks(
    plan: dict[str, Any], split: _Split, start: int, workers: int, chunk: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray, int]]:
    """(first file, images, labels, files covered) chunk by chunk, in order, from file `start`."""
    starts = range(start, split.count, chunk)
    if plan["kind"] == "dataset":
        data: ImageDataset = plan["loaded"][split.name]
        for b in starts:
            x = data.images[b : b + chunk].numpy()
            y = data.labels[b : b + chunk].numpy() if data.labels is not None else np.full(len(x), -1)
            yield b, x, y, len(x)
        return
    rgb, size = plan["channels"] == 3, plan["size"]
    labels = np.asarray(split.labels, dtype=np.int64)

    def job(b: int) -> tuple[list[str], int, bool]:
        return [str(f) for f in split.files[b : b + chunk]], size, rgb

    if workers <= 1:
        for b in starts:
            x, kept = _decode_chunk(*job(b))
            yield b, x, labels[b : b + chunk][kept], min(chunk, split.count - b)
        return
    with decode_pool(workers) as pool:
        pending: deque[tuple[int, Future[tuple[np.ndarray, np.ndarray]]]] = deque()
        todo = iter(starts)
        for b in todo:  # keep 2 chunks per worker in flight: memory stays bounded
            pending.append((b, pool.submit(_decode_chunk, *job(b))))
            if len(pending) >= 2 * workers:
                break
        while pending:
            b, fut = pending.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(_decode_chunk, *job(nxt))))
            x, kept = fut.result()
            yield b, x, labels[b : b + chunk][kept], min(chunk, split.count - b)


def _init_worker() -> None:
    torch.set_num_threads(1)


def _worker_context() -> BaseContext:
    """Decoding workers are forked from a server process that imported this module (torch,
    torchvision) once and never ran a torch op — fork-safe, unlike forking this process once its
    thread pools started, and a worker starts in milliseconds where a spawned one imports torch
    and torchvision again (~3 s each, every split). Spawn where there is no forkserver."""
    if "forkserver" not in get_all_start_methods():
        return get_context("spawn")
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload([__name__, "torchvision.io"])
    return ctx


def start_workers(workers: int) -> None:
    """Start the decoding workers' server now (it imports in the background while the caller
    lists its files)."""
    ctx = _worker_context()
    if workers > 1 and ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def decode_pool(workers: int) -> ProcessPoolExecutor:
    """`workers` decoding processes (one torch thread each)."""
    return ProcessPoolExecutor(workers, mp_context=_worker_context(), initializer=_init_worker)


def _decode_chunk(paths: list[str], size: int, rgb: bool) -> tuple[np.ndarray, np.ndarray]:
    """Decode, resize and crop a chunk of files; (images (k, C, S, S), kept indices)."""
    out: list[np.ndarray] = []
    kept: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for i, p in enumerate(paths):
            img = _decode_one(Path(p))
            if img is None:
                continue
            img = _to_channels(_resize_center_crop(img, size), rgb)
            if not rgb and img.shape[0] == 3:  # the header said gray, the decoder colour
                img = img.float().mean(0, keepdim=True).round_().to(torch.uint8)
            out.append(img.numpy())
            kept.append(i)
    c = 3 if rgb else 1
    stacked = np.stack(out) if out else np.zeros((0, c, size, size), np.uint8)
    return stacked, np.asarray(kept, dtype=np.int64)


def _finish(out: Path, plan: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """Trim the files to the images kept, save the labels, hash, write the manifest last."""
    c, s = plan["channels"], plan["size"]
    splits: dict[str, Any] = {}
    for split in plan["splits"]:
        rec = state["splits"][split.name]
        n = rec["written"]
        img = out / images_file(split.name)
        os.truncate(img, n * c * s * s)
        tmp = out / f"{split.name}.labels.i64"
        if tmp.exists():
            labels = np.fromfile(tmp, dtype=np.int64, count=n)
            np.save(out / labels_file(split.name), labels)
            tmp.unlink()
        image_entry, hist = _image_entry(img, c, s)
        mean, std = stats_from_histogram(hist)
        splits[split.name] = {
            "count": n,
            "corrupt": rec["corrupt"],
            "mean": list(mean),
            "std": list(std),
            "files": {"images": image_entry, "labels": _file_entry(out / labels_file(split.name))},
        }
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "source": plan["source"],
        "source_kind": plan["kind"],
        "channels": c,
        "size": s,
        "classes": plan["classes"],
        "resize": RESIZE_RULE.replace("SIZE", str(s)),
        "splits": splits,
        **plan.get("extra", {}),
    }
    _save_json(out / MANIFEST, manifest)
    # the files were hashed just now: the first open need not hash them again
    entries = [entry for rec in splits.values() for entry in rec["files"].values()]
    _save_json(out / VERIFIED, _verified_marker(out, entries, hashlib.sha256((out / MANIFEST).read_bytes()).hexdigest()))
    (out / PROGRESS).unlink(missing_ok=True)
    return manifest


def _file_entry(path: Path) -> dict[str, Any]:
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}


def _image_entry(path: Path, channels: int, size: int) -> tuple[dict[str, Any], Tensor]:
    """The manifest entry of an images file and its per-channel value histogram (C, 256), both
    from one pass over the file in blocks of whole images."""
    digest = hashlib.sha256()
    hist = torch.zeros(channels, 256, dtype=torch.int64)
    image_bytes = channels * size * size
    with open(path, "rb") as fh:
        while data := fh.read(max(1, _HASH_BLOCK // image_bytes) * image_bytes):
            digest.update(data)
            pixels = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            hist += channel_histogram(pixels.view(-1, channels, size, size))
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}, hist


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- open


def read_manifest(store: str | Path) -> dict[str, Any]:
    """The manifest of a complete store, its files checked (sizes always, sha256 once)."""
    root = Path(store).expanduser()
    path = root / MANIFEST
    if not path.is_file():
        hint = " (an interrupted prepare: run it again)" if (root / PROGRESS).is_file() else ""
        raise UserError(f"{root} is not an image store: {MANIFEST} missing{hint}; make one with `contrastkit prepare`")
    raw = path.read_bytes()
    try:
        manifest: dict[str, Any] = json.loads(raw)
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise ValueError(f"format {manifest.get('format')!r} version {manifest.get('version')!r}")
        c, s = int(manifest["channels"]), int(manifest["size"])
        entries = []
        for split, rec in manifest["splits"].items():
            n = int(rec["count"])
            for kind, expected in (("images", n * c * s * s), ("labels", None)):
                entry = rec["files"][kind]
                if entry["name"] != (images_file(split) if kind == "images" else labels_file(split)):
                    raise ValueError(f"unexpected file name {entry['name']!r}")
                if expected is not None and int(entry["bytes"]) != expected:
                    raise ValueError(f"{entry['name']}: {entry['bytes']} bytes recorded for {n} images of {c}x{s}x{s}")
                entries.append(entry)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} is not a valid store manifest ({exc}); prepare the store again") from exc
    _verify_files(root, entries, hashlib.sha256(raw).hexdigest())
    return manifest


def _verified_marker(root: Path, entries: list[dict[str, Any]], manifest_hash: str) -> dict[str, Any]:
    """What ``.verified.json`` records once the files matched their sha256: the manifest's hash
    and each file's size and mtime (a file changed since is hashed again)."""
    seen: dict[str, list[int]] = {}
    for entry in entries:
        f = root / entry["name"]
        if not f.is_file():
            raise UserError(f"store {root} is damaged: {entry['name']} is missing; prepare it again")
        st = f.stat()
        if st.st_size != int(entry["bytes"]):
            raise UserError(
                f"store {root} is damaged: {entry['name']} has {st.st_size} bytes, the manifest says "
                f"{entry['bytes']}; prepare it again"
            )
        seen[entry["name"]] = [st.st_size, st.st_mtime_ns]
    return {"manifest": manifest_hash, "files": seen}


def _verify_files(root: Path, entries: list[dict[str, Any]], manifest_hash: str) -> None:
    marker = _verified_marker(root, entries, manifest_hash)
    try:
        if json.loads((root / VERIFIED).read_text()) == marker:
            return
    except (OSError, ValueError):
        pass
    for entry in entries:
        if _sha256(root / entry["name"]) != entry["sha256"]:
            raise UserError(
                f"store {root} is damaged: {entry['name']} does not match its sha256 in {MANIFEST}; prepare it again"
            )
    with contextlib.suppress(OSError):  # a read-only store is checked on every open
        _save_json(root / VERIFIED, marker)


def open_store(store: str | Path | None, split: str = "train", image_size: int | None = None) -> ImageDataset:
    """One split of a store as an ImageDataset backed by a read-only memory map (no copy)."""
    if not store:
        raise UserError("data set 'store' needs data.root: a folder written by `contrastkit prepare`")
    root = Path(store).expanduser()
    manifest = read_manifest(root)
    splits = manifest["splits"]
    if split not in splits:
        raise UserError(f"store {root} has no split {split!r} (it has: {', '.join(splits)})")
    c, s, n = int(manifest["channels"]), int(manifest["size"]), int(splits[split]["count"])
    if image_size is not None and image_size != s:
        raise UserError(
            f"store {root} holds {s}x{s} images but data.image_size is {image_size}; "
            f"leave data.image_size unset or prepare the store again with --size {image_size}"
        )
    if n == 0:
        raise UserError(f"store {root}: split {split!r} holds no images")
    array = np.memmap(root / images_file(split), np.uint8, "r", shape=(n, c, s, s))
    mapped.register(array)  # passes over the store give their pages back (see mapped.py)
    with warnings.catch_warnings():  # read-only on purpose: nothing writes to the images
        warnings.simplefilter("ignore", UserWarning)
        images = torch.from_numpy(array)
    labels = np.load(root / labels_file(split))
    classes = list(manifest["classes"])
    labelled = bool(classes) and labels.shape == (n,) and bool((labels >= 0).all())
    data = ImageDataset(
        images, torch.from_numpy(labels) if labelled else None, classes if labelled else [], "store", mapped=True
    )
    rec = splits[split]
    if isinstance(rec.get("mean"), list) and isinstance(rec.get("std"), list) and len(rec["mean"]) == c == len(rec["std"]):
        data.set_stats(rec["mean"], rec["std"])  # computed when the store was prepared
    return data

