"""What ``contrastkit prepare`` reads: the plan of a SOURCE and its pieces, in order.

A SOURCE is an image folder, tar shards (contrastkit.data.image.shards) or a named data set.
:func:`plan_source` lists it without decoding: splits, their units (files, shards or images),
labels, channels, classes and a digest of what was listed (a resumed prepare must see the same).
:func:`pieces` then decodes a split from a given unit on, in order, in worker processes for
folders and shards (contrastkit.data.image.pool): each :class:`Piece` is what the store's writer
(contrastkit.data.image.write) writes and records in one step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contrastkit.data.image import shards
from contrastkit.data.image.datasets import DATASETS, SPLITS, load_image_dataset
from contrastkit.data.image.decode import IMAGE_SUFFIXES, decode_chunk, header_colour
from contrastkit.data.image.folders import SPLIT_FOLDERS, image_files, subfolders
from contrastkit.data.image.imageset import ImageDataset
from contrastkit.data.image.pool import map_in_order
from contrastkit.errors import UserError, check_choice

FOLDER_SIZE = 64  # --size of folders and shards when not given

ALLOWED_SOURCES = (
    "expected an image folder, tar shards (a .tar file, a folder of them, or a pattern like "
    "'shards/train-{000000..000009}.tar'), or a data set NAME[:SPLIT]"
)


@dataclass
class Split:
    """One split to write: `count` units (files of a folder, shards, or images of a data set)."""

    name: str
    files: list[Path]  # folder files or shard files; empty for named data sets
    labels: list[int]  # folder files' labels
    count: int  # units to go through
    capacity: int = 0  # images to allocate the files for up front (0: unknown, they grow)


@dataclass
class Plan:
    """What to read and how the store's files are laid out while it is written."""

    source: str
    kind: str  # "folder", "dataset", "shards" (or "arrays": write_store)
    size: int
    channels: int
    classes: list[str]
    digest: str
    splits: list[Split]
    loaded: dict[str, ImageDataset] = field(default_factory=dict)  # named data sets, per split
    # tar shards: labels are tokens, resolved to classes once every shard is read
    label_tokens: bool = False
    # tar shards: written as RGB, rewritten as one channel when no image was colour
    gray_at_end: bool = False

    def params(self) -> dict[str, Any]:
        """What a resumed prepare must find unchanged."""
        return {"source": self.source, "kind": self.kind, "size": self.size, "channels": self.channels,
                "classes": self.classes, "digest": self.digest}


@dataclass
class Piece:
    """Decoded images of consecutive units of a split, and what the writer records of them."""

    images: np.ndarray  # uint8 (k, C, S, S)
    labels: np.ndarray | list[shards.Label]  # int64 (k,), or label tokens (plan.label_tokens)
    done: int  # units of the split done once this piece is written
    corrupt: int  # files or samples skipped
    record: dict[str, Any] | None = None  # a shard's record (name, bytes, sha256, counts)
    colour: bool = False  # whether any image was colour (plan.gray_at_end)


# ----------------------------------------------------------------------------- plans


def plan_source(source: str, size: int | None) -> Plan:
    """What to read: tar shards, an image folder or a named data set."""
    found = shards.shard_source(source)
    if found is not None:
        return _shards_plan(found, size or FOLDER_SIZE, source)
    folder = Path(source).expanduser()
    if folder.is_dir():
        return _folder_plan(folder, size or FOLDER_SIZE)
    name = source.partition(":")[0]
    if name not in DATASETS and (folder.exists() or "/" in source or folder.suffix):
        what = "is not an image folder nor a .tar shard" if folder.exists() else "does not exist"
        raise UserError(f"SOURCE {source!r} {what}; {ALLOWED_SOURCES}")
    return _dataset_plan(source, size)


def _folder_plan(folder: Path, size: int) -> Plan:
    """The splits, files, labels and channels of an image folder (as ``data.name: folder``
    reads it; the classes are those of all split folders)."""
    subdirs = {p.name for p in subfolders(folder)}
    roots = (
        {name: folder / name for name in sorted(subdirs)}
        if subdirs and subdirs <= SPLIT_FOLDERS
        else {"train": folder}
    )
    per_split: dict[str, list[Path]] = {}
    classes: list[str] = sorted({d.name for r in roots.values() for d in subfolders(r)})
    splits: list[Split] = []
    for name, root in roots.items():
        dirs = subfolders(root)
        files: list[Path] = []
        labels: list[int] = []
        if dirs:
            for d in dirs:
                members = image_files(d, recursive=True)
                files.extend(members)
                labels.extend([classes.index(d.name)] * len(members))
        else:
            files = image_files(root, recursive=False)
            labels = [-1] * len(files)
        per_split[name] = files
        splits.append(Split(name, files, labels, len(files), max(1, len(files))))
    everything = [f for files in per_split.values() for f in files]
    if not everything:
        raise UserError(
            f"image folder {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)}); "
            f"expected images directly inside it, one subfolder per class, or train/ test/ split folders"
        )
    digest = hashlib.sha256()
    for f in everything:
        st = f.stat()
        digest.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return Plan(
        source=str(folder.resolve()),
        kind="folder",
        size=size,
        # unreadable headers count as gray: such files are counted as corrupt when decoded
        channels=3 if any(header_colour(f) for f in everything) else 1,
        classes=classes,
        digest=digest.hexdigest(),
        splits=splits,
    )


def _dataset_plan(source: str, size: int | None) -> Plan:
    name, _, split = source.partition(":")
    if name not in DATASETS or name in ("folder", "store"):
        named = [d for d in DATASETS if d not in ("folder", "store")]
        raise UserError(
            f"SOURCE {source!r} is neither an image folder, tar shards nor a data set: {ALLOWED_SOURCES} "
            f"with NAME one of {', '.join(named)}"
        )
    if split:
        check_choice(f"split for {name}", split, SPLITS[name])
    names = [split] if split else [s for s in SPLITS[name] if "+" not in s]
    loaded = {s: load_image_dataset(name, split=s, image_size=size) for s in names}
    first = next(iter(loaded.values()))
    return Plan(
        source=source,
        kind="dataset",
        size=first.image_size,
        channels=first.channels,
        classes=max((d.classes for d in loaded.values()), key=len),
        digest=hashlib.sha256(source.encode()).hexdigest(),
        splits=[Split(s, [], [], len(d), max(1, len(d))) for s, d in loaded.items()],
        loaded=loaded,
    )


def _shards_plan(found: list[Path], size: int, source: str) -> Plan:
    """Splits by shard name prefix; channels (RGB while writing) and classes known at the end."""
    return Plan(
        source=shards.source_name(source),
        kind="shards",
        size=size,
        channels=3,  # while writing; 1 at the end when no image was colour
        classes=[],  # known at the end, from all shards
        digest=shards.shards_digest(found),
        splits=[Split(name, files, [], len(files)) for name, files in shards.split_shards(found).items()],
        label_tokens=True,
        gray_at_end=True,
    )


# ----------------------------------------------------------------------------- pieces


def pieces(plan: Plan, split: Split, start: int, workers: int, chunk: int) -> Iterator[Piece]:
    """The split's pieces in order from unit `start`: `chunk` images or files at a time, or one
    shard at a time; decoded by `workers` processes (0 or 1: in this process)."""
    if plan.kind == "dataset":
        data = plan.loaded[split.name]
        for b in range(start, split.count, chunk):
            x = data.images[b : b + chunk].numpy()
            y = data.labels[b : b + chunk].numpy() if data.labels is not None else np.full(len(x), -1)
            yield Piece(x, y, b + len(x), 0)
    elif plan.kind == "shards":
        todo = split.files[start:]
        # one decoded shard per worker (plus one) in memory at most
        results = map_in_order(shards.read_shard, ((str(p), plan.size) for p in todo), workers, workers + 1)
        with closing(results):  # stopped early: the workers are shut down at once
            for i, result in enumerate(results):
                rec = result["record"]
                yield Piece(result["images"], result["labels"], start + i + 1, rec["corrupt"], rec, result["colour"])
    else:
        yield from _folder_pieces(plan, split, start, workers, chunk)


def _folder_pieces(plan: Plan, split: Split, start: int, workers: int, chunk: int) -> Iterator[Piece]:
    rgb, size = plan.channels == 3, plan.size
    labels = np.asarray(split.labels, dtype=np.int64)
    starts = range(start, split.count, chunk)
    jobs = (([str(f) for f in split.files[b : b + chunk]], size, rgb) for b in starts)
    # two chunks per worker in flight: memory stays bounded
    results = map_in_order(decode_chunk, jobs, workers, 2 * workers)
    with closing(results):  # stopped early: the workers are shut down at once
        for b, (x, kept) in zip(starts, results, strict=True):
            n_files = min(chunk, split.count - b)
            yield Piece(x, labels[b : b + chunk][kept], b + n_files, n_files - len(x))
