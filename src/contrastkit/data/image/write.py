"""The image store's writer: ``prepare_store`` and ``write_store`` (see contrastkit.data.image.store).

Every prepare SOURCE (contrastkit.data.image.sources: an image folder, a named data set, tar
shards) is written by :func:`_write_split`, piece by piece, with one resume protocol:

- per split, ``.progress.json`` records ``done`` (units: files, images or shards), ``written``
  (images), ``corrupt`` (files or samples skipped) and ``labels_bytes``;
- a piece's images go to row ``written`` of ``SPLIT.images.u8`` and its labels to byte
  ``labels_bytes`` of the split's labels file (raw int64; one JSON token per line for tar
  shards), with ``pwrite`` (not through a map: no page faults in this process, which shares the
  CPU with the decoding workers), both ``fdatasync``-ed before the progress file (replaced
  atomically) says so;
- run again with the same arguments, prepare checks that the files hold what the progress file
  records and goes on from there, over whatever a killed run wrote past it; the files are
  trimmed to what was recorded when the store is finished.

Where the image count is known (folders, data sets) the files are allocated at full size first.
Finishing: tar shards' images are rewritten as one channel when none was colour and their label
tokens become classes (each step recorded, so a kill there resumes too); then every split's files
are trimmed, its labels saved as ``.npy``, and one pass over its images gives their sha256 and
per-channel statistics; the manifest is written last.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrastkit.data.image.imageset import channel_histogram, stats_from_histogram
from contrastkit.data.image.pool import start_workers
from contrastkit.data.image.shards import Label, label_classes
from contrastkit.data.image.sources import Piece, Plan, Split, pieces, plan_source
from contrastkit.data.image.storefmt import (
    FORMAT,
    HASH_BLOCK,
    MANIFEST,
    PROGRESS,
    RESIZE_RULE,
    VERIFIED,
    VERSION,
    file_entry,
    gray_images_file,
    images_file,
    label_tokens_file,
    labels_file,
    raw_labels_file,
    save_json,
    verified_marker,
)
from contrastkit.errors import UserError

CHUNK_FILES = 256  # files (or data-set images) per piece
_LABEL_BYTES = 8  # one int64 label


class StoreInterrupted(Exception):
    """Raised by ``prepare_store(..., stop_after=K)`` (tests): stopped after K images."""


# ----------------------------------------------------------------------------- prepare


def prepare_store(
    source: str,
    out: str | Path,
    *,
    size: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    chunk: int = CHUNK_FILES,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Decode SOURCE into the store folder OUT (see contrastkit.data.image.store); returns the manifest."""
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
    plan = plan_source(source, size)
    if plan.kind != "dataset":
        start_workers(n_workers)  # their server imports while the progress is read
    out.mkdir(parents=True, exist_ok=True)
    state = _resume_state(out, plan)
    done_images = 0
    for split in plan.splits:
        left = None if stop_after is None else stop_after - done_images
        done_images += _write_split(out, plan, split, state, n_workers, progress, chunk, left)
    elapsed = time.monotonic() - started
    if plan.gray_at_end and not state.get("colour", False):
        _to_gray(out, plan, state)
    if plan.label_tokens:
        _resolve_labels(out, plan, state)
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
        with open(out / images_file(name), "wb") as fi, open(out / raw_labels_file(name), "wb") as fl:
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
    plan = Plan(source=source, kind="arrays", size=shape[1], channels=shape[0], classes=list(classes), digest="",
                splits=[Split(name, [], [], rec["written"]) for name, rec in state["splits"].items()])
    return _finish(out, plan, state)


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


# ----------------------------------------------------------------------------- progress


def _resume_state(out: Path, plan: Plan) -> dict[str, Any]:
    """The progress of an earlier, interrupted prepare of the same source, or a fresh start."""
    path = out / PROGRESS
    params = plan.params()
    fresh = {"params": params, "splits": {s.name: {"done": 0, "written": 0, "corrupt": 0} for s in plan.splits}}
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
    for split in plan.splits:  # the files must hold what the progress file says they do
        rec = state["splits"][split.name]
        if not rec["done"]:
            continue
        need = [(out / images_file(split.name), rec["written"] * _row_bytes(plan, state, split.name))]
        if rec["done"] < split.count or (plan.label_tokens and "classes" not in state):  # labels still appended
            need.append((out / _labels_tmp(plan, split.name), rec.get("labels_bytes", rec["written"] * _LABEL_BYTES)))
        for f, length in need:
            if not f.is_file() or f.stat().st_size < length:
                raise UserError(f"{f} is shorter than its recorded progress; delete {out} and prepare again")
    return state


def _row_bytes(plan: Plan, state: dict[str, Any], split: str) -> int:
    """Bytes of one image of `split`'s images file as it is now (tar shards: 3 channels while
    written, 1 once made gray)."""
    return (1 if split in state.get("gray", []) else plan.channels) * plan.size**2


def _labels_tmp(plan: Plan, split: str) -> str:
    """The file `split`'s labels are appended to while it is written."""
    return label_tokens_file(split) if plan.label_tokens else raw_labels_file(split)


# ----------------------------------------------------------------------------- writing


def _write_split(
    out: Path,
    plan: Plan,
    split: Split,
    state: dict[str, Any],
    workers: int,
    progress: bool,
    chunk: int,
    stop_after: int | None,
) -> int:
    """Write one split's pieces from where the progress file says; returns images written now."""
    rec = state["splits"][split.name]
    row = _row_bytes(plan, state, split.name)
    paths = (out / images_file(split.name), out / _labels_tmp(plan, split.name))
    if not rec["done"]:  # a new split: its files afresh, at full size when known (trimmed by _finish)
        for path, nbytes in zip(paths, (split.capacity * row, split.capacity * _LABEL_BYTES), strict=True):
            with open(path, "wb") as fh:
                fh.truncate(nbytes)
    if rec["done"] >= split.count:
        return 0
    rec.setdefault("labels_bytes", rec["written"] * _LABEL_BYTES)
    fds = [os.open(path, os.O_RDWR) for path in paths]
    written_now = 0
    bar = _bar(split, rec, progress)
    started = time.monotonic()
    try:
        for piece in pieces(plan, split, rec["done"], workers, chunk):
            labels = _encode_labels(piece.labels)
            _pwrite(fds[0], np.ascontiguousarray(piece.images, dtype=np.uint8), rec["written"] * row)
            _pwrite(fds[1], labels, rec["labels_bytes"])
            for fd in fds:  # on disk before the progress file says so
                os.fdatasync(fd)
            units = piece.done - rec["done"]
            rec["done"] = piece.done
            rec["written"] += len(piece.images)
            rec["corrupt"] += piece.corrupt
            rec["labels_bytes"] += len(labels)
            _record(plan, split, state, piece)
            save_json(out / PROGRESS, state)
            written_now += len(piece.images)
            if split.capacity:  # counted in units (files or images) of a known total
                bar.update(units)
            else:  # shards: images, and shards done alongside
                bar.update(len(piece.images))
                bar.set_postfix(shards=f"{rec['done']}/{split.count}",
                                rate=f"{written_now / max(1e-9, time.monotonic() - started):.0f} img/s")
            if stop_after is not None and written_now >= stop_after:
                raise StoreInterrupted(f"stopped after {written_now} images")
    finally:
        bar.close()
        for fd in fds:
            os.close(fd)
    return written_now


def _bar(split: Split, rec: dict[str, Any], progress: bool) -> Any:
    """The split's progress bar: units of a known total, else (tar shards) images written."""
    from tqdm import tqdm

    known = split.capacity > 0
    return tqdm(total=split.count if known else None, initial=rec["done"] if known else rec["written"], unit="img",
                desc=f"prepare {split.name}", disable=not progress, dynamic_ncols=True, leave=True)


def _record(plan: Plan, split: Split, state: dict[str, Any], piece: Piece) -> None:
    """What the progress file keeps of a piece besides the counts: a shard's record, colour."""
    if piece.record is not None:
        state.setdefault("shards", []).append({"split": split.name, **piece.record})
    if plan.gray_at_end:
        state["colour"] = state.get("colour", False) or piece.colour


def _encode_labels(labels: np.ndarray | list[Label]) -> bytes | memoryview:
    """Labels as the bytes of the labels file: raw int64, or one JSON token per line."""
    if isinstance(labels, np.ndarray):
        return np.ascontiguousarray(labels, dtype=np.int64).data.cast("B")
    return "".join(json.dumps(t) + "\n" for t in labels).encode()


def _pwrite(fd: int, data: np.ndarray | bytes | memoryview, offset: int) -> None:
    # an array as flat bytes (a view with a zero in its shape cannot be cast)
    view = (data.reshape(-1).data if isinstance(data, np.ndarray) else memoryview(data)).cast("B")
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


# ----------------------------------------------------------------------------- finishing


def _to_gray(out: Path, plan: Plan, state: dict[str, Any], block: int = 1024) -> None:
    """Rewrite the RGB files as one channel (channel 0 of images that were gray everywhere)."""
    s = plan.size
    state.setdefault("gray", [])
    for split in plan.splits:
        if split.name in state["gray"]:
            continue
        n = state["splits"][split.name]["written"]
        src, dst = out / images_file(split.name), out / gray_images_file(split.name)
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            for b in range(0, n, block):
                k = min(block, n - b)
                rgb = np.frombuffer(fin.read(k * 3 * s * s), np.uint8).reshape(k, 3, s, s)
                fout.write(np.ascontiguousarray(rgb[:, :1]).tobytes())
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(dst, src)
        state["gray"].append(split.name)
        save_json(out / PROGRESS, state)
    plan.channels = 1


def _resolve_labels(out: Path, plan: Plan, state: dict[str, Any]) -> None:
    """Label tokens → int64 labels, with the classes of all shards (see shards.label_classes)."""
    if "classes" not in state:
        tokens: dict[str, list[Label]] = {}
        for split in plan.splits:
            path = out / label_tokens_file(split.name)
            nbytes = state["splits"][split.name].get("labels_bytes", 0)
            tokens[split.name] = _read_tokens(path, nbytes) if path.exists() else []
        classes, ints = label_classes(tokens)
        for name, values in ints.items():
            np.asarray(values, dtype=np.int64).tofile(out / raw_labels_file(name))
        state["classes"] = classes
        save_json(out / PROGRESS, state)
    for split in plan.splits:
        (out / label_tokens_file(split.name)).unlink(missing_ok=True)
    plan.classes = state["classes"]


def _read_tokens(path: Path, nbytes: int) -> list[Label]:
    """The label tokens in the first `nbytes` bytes of a tokens file (what the progress records)."""
    with open(path, "rb") as fh:
        data = fh.read(nbytes)
    return [json.loads(line) for line in data.decode().splitlines()]


def _finish(out: Path, plan: Plan, state: dict[str, Any]) -> dict[str, Any]:
    """Trim the files to the images kept, save the labels, hash, write the manifest last."""
    c, s = plan.channels, plan.size
    splits: dict[str, Any] = {}
    for split in plan.splits:
        rec = state["splits"][split.name]
        n = rec["written"]
        img = out / images_file(split.name)
        os.truncate(img, n * c * s * s)
        tmp = out / raw_labels_file(split.name)
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
            "files": {"images": image_entry, "labels": file_entry(out / labels_file(split.name))},
        }
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "source": plan.source,
        "source_kind": plan.kind,
        "channels": c,
        "size": s,
        "classes": plan.classes,
        "resize": RESIZE_RULE.replace("SIZE", str(s)),
        "splits": splits,
        **({"shards": state.get("shards", [])} if plan.kind == "shards" else {}),
    }
    save_json(out / MANIFEST, manifest)
    # the files were hashed just now: the first open need not hash them again
    entries = [entry for rec in splits.values() for entry in rec["files"].values()]
    manifest_hash = hashlib.sha256((out / MANIFEST).read_bytes()).hexdigest()
    save_json(out / VERIFIED, verified_marker(out, entries, manifest_hash))
    (out / PROGRESS).unlink(missing_ok=True)
    return manifest


def _image_entry(path: Path, channels: int, size: int) -> tuple[dict[str, Any], Tensor]:
    """The manifest entry of an images file and its per-channel value histogram (C, 256), both
    from one pass over the file in blocks of whole images."""
    digest = hashlib.sha256()
    hist = torch.zeros(channels, 256, dtype=torch.int64)
    image_bytes = channels * size * size
    with open(path, "rb") as fh:
        while data := fh.read(max(1, HASH_BLOCK // image_bytes) * image_bytes):
            digest.update(data)
            pixels = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            hist += channel_histogram(pixels.view(-1, channels, size, size))
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}, hist
