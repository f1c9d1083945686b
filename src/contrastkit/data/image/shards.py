"""WebDataset-style tar shards as a ``contrastkit prepare`` SOURCE.

SOURCE is one ``.tar`` file (``.tar.gz`` / ``.tgz`` too), a folder holding ``.tar`` files (and
no image files or subfolders: that is an image folder), or a brace pattern such as ``shards/train-{000000..000009}.tar``
(expanded here, as WebDataset does: quote it in the shell). Shards whose names start with a split
name (``train-``, ``test_``, ``val.`` …) go to that split; otherwise every shard is ``train``.

Each shard is read as a stream (``tarfile`` mode ``"r|*"``, no seeking, hashed while read) in a
worker process, one shard per task. Members are grouped into samples by key, as WebDataset does:
the member's path up to the first dot of its basename (``a/b/x1.seg.png`` → key ``a/b/x1``,
extension ``seg.png``); consecutive members with the same key form one sample. The image is the
sample's first member with extension jpg / jpeg / png / webp / ppm / bmp, decoded (torchvision;
PIL for PPM and BMP), resized and centre-cropped exactly as image folders are. The label: ``.cls``
(an integer, as WebDataset writes it, or a class name) or ``.label`` (a class name); with names,
the classes are the sorted names seen in all shards. ``.txt`` is a caption (WebDataset's and
open_clip's convention), not a label: it is read as a class name only when no sample of the
store has ``.cls`` or ``.label``, with a deprecation warning. Without any, the store is
unlabelled (label -1). Samples whose image does not decode,
or without an image, are skipped and counted (``corrupt``; the imageless ones also as
``imageless``); a truncated or unreadable archive keeps the samples read before the damage and
records the error with the shard.

This module reads; the store's one writer (contrastkit.data.image.write) writes what it reads,
one shard at a time, so resume granularity is the shard: after each shard, the images, the label
tokens and the shard's record (name, bytes, sha256, samples, corrupt) are recorded in
``.progress.json``; a prepare killed mid-shard reads that shard again. Images are written as RGB
while reading; when no image of any shard was colour, the store is rewritten as one channel at
the end (gray images repeated to RGB have three equal channels), so a gray collection gives the
same store as the same images in a folder. The label tokens become classes at the end
(:func:`label_classes`).
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrastkit.data.image.decode import (
    IMAGE_SUFFIXES,
    PIL_SUFFIXES,
    decode_bytes,
    resize_center_crop,
    to_channels,
)
from contrastkit.errors import UserError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
# a sample's image: WebDataset's image extensions (no GIF)
SHARD_IMAGE_EXTENSIONS = tuple(s.lstrip(".") for s in (*IMAGE_SUFFIXES, *PIL_SUFFIXES) if s != ".gif")
_LABEL_CLS = "cls"
_LABEL_NAME = "label"
_CAPTION = "txt"  # a caption; a class name only in stores without .cls / .label (deprecated)
_SPLIT_PREFIX = re.compile(r"^(train|test|val|valid|validation|unlabeled)[-_.]")
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")
_KEY = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")

# a sample's label token: a .cls integer, a .cls / .label name, {"txt": name} (a .txt only), or none
Label = int | str | dict[str, str] | None


def is_tar(path: Path) -> bool:
    return path.name.lower().endswith(TAR_SUFFIXES)


def names_shards(source: str) -> bool:
    """Whether SOURCE is written as shards (a brace pattern or a .tar file), without reading it."""
    return bool(_BRACES.search(source)) or is_tar(Path(source))


def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` → ``a-000.tar a-001.tar a-002.tar`` (zero padding kept; several ranges
    multiply out, as WebDataset's braceexpand does for numeric ranges)."""
    m = _BRACES.search(pattern)
    if m is None:
        return [pattern]
    lo, hi = m.group(1), m.group(2)
    if int(hi) < int(lo):
        raise UserError(f"shard pattern {pattern!r}: the range {{{lo}..{hi}}} is empty (it must count up)")
    width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
    head, tail = pattern[: m.start()], pattern[m.end() :]
    return [p for i in range(int(lo), int(hi) + 1) for p in expand_braces(f"{head}{i:0{width}d}{tail}")]


def shard_source(source: str) -> list[Path] | None:
    """The shard files of SOURCE when it names tar shards (one file, a folder of them, a brace
    pattern), else None. Missing shards of a pattern are a UserError."""
    if _BRACES.search(source):
        paths = [Path(p).expanduser() for p in expand_braces(source)]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise UserError(
                f"shard pattern {source!r}: {len(missing)} of its {len(paths)} files do not exist "
                f"(first: {missing[0]}); expected existing .tar files"
            )
        if not all(is_tar(p) for p in paths):
            raise UserError(f"shard pattern {source!r} must name {' / '.join(TAR_SUFFIXES)} files")
        return paths
    path = Path(source).expanduser()
    if path.is_file() and is_tar(path):
        return [path]
    if path.is_dir():
        children = [p for p in path.iterdir() if not p.name.startswith(".")]
        tars = sorted(p for p in children if p.is_file() and is_tar(p))
        images = [p for p in children if p.suffix.lower() in (*IMAGE_SUFFIXES, *PIL_SUFFIXES)]
        if tars and not images and not any(p.is_dir() for p in children):
            return tars
    return None


def split_shards(shards: list[Path]) -> dict[str, list[Path]]:
    """The shards of each split: by the split name every shard's name starts with (``train-``,
    ``test_``, ...), else all of them ``train``."""
    prefixes = [_SPLIT_PREFIX.match(p.name) for p in shards]
    by_split: dict[str, list[Path]] = {}
    for p, m in zip(shards, prefixes, strict=True):
        name = m.group(1) if all(prefixes) and m is not None else "train"
        by_split.setdefault(name, []).append(p)
    return by_split


def shards_digest(shards: list[Path]) -> str:
    """What identifies the shards' contents for a resumed prepare: paths, sizes and mtimes."""
    digest = hashlib.sha256()
    for p in shards:
        st = p.stat()
        digest.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def source_name(source: str) -> str:
    """The SOURCE as the manifest records it: a brace pattern as given, else the resolved path."""
    return source if _BRACES.search(source) else str(Path(source).expanduser().resolve())


# ----------------------------------------------------------------------------- reading one shard


class _HashingReader(io.RawIOBase):
    """A read-only stream over a file that hashes (sha256) and counts every byte read."""

    def __init__(self, path: str) -> None:
        self._fh = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._fh.readinto(buffer)
        if n:
            self.sha256.update(memoryview(buffer)[:n])
            self.bytes += n
        return n or 0

    def close(self) -> None:
        self._fh.close()
        super().close()


def _samples(tar: tarfile.TarFile) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) of consecutive members sharing a key (WebDataset grouping)."""
    key: str | None = None
    members: dict[str, bytes] = {}
    for info in tar:
        if not info.isfile():
            continue
        m = _KEY.match(info.name)
        if m is None:
            continue
        k, ext = m.group(1), m.group(2).lower()
        fh = tar.extractfile(info)
        data = fh.read() if fh is not None else b""
        if k != key:
            if key is not None:
                yield key, members
            key, members = k, {}
        members.setdefault(ext, data)
    if key is not None:
        yield key, members


def _text(data: bytes) -> str | None:
    try:
        return data.decode().strip() or None
    except UnicodeDecodeError:
        return None


def _label(members: dict[str, bytes]) -> Label:
    if _LABEL_CLS in members:
        text = _text(members[_LABEL_CLS])
        try:
            return None if text is None else int(text)
        except ValueError:
            return text  # a class name
    if _LABEL_NAME in members:
        return _text(members[_LABEL_NAME])
    if _CAPTION in members:
        caption = _text(members[_CAPTION])
        return None if caption is None else {_CAPTION: caption}
    return None


def _ends_archive(path: str, offset: int) -> bool:
    """Whether an uncompressed tar holds its end marker (two zero blocks) at `offset`: tarfile
    stops silently when a file is cut at a member boundary."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        marker = fh.read(2 * tarfile.BLOCKSIZE)
    return len(marker) == 2 * tarfile.BLOCKSIZE and not marker.strip(b"\0")


def read_shard(path: str, size: int) -> dict[str, Any]:
    """Decode one shard: images (k, 3, S, S) uint8, k label tokens (int, str or None), k captions
    (a ``.txt`` member's text or None), whether any image was colour, counts, and the shard's
    bytes and sha256."""
    images: list[np.ndarray] = []
    labels: list[Label] = []
    captions: list[str | None] = []
    colour = False
    samples = corrupt = imageless = 0
    error: str | None = None
    reader = _HashingReader(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                with tarfile.open(fileobj=io.BufferedReader(reader, 1 << 20), mode="r|*") as tar:
                    for _, members in _samples(tar):
                        samples += 1
                        ext = next((e for e in members if e in SHARD_IMAGE_EXTENSIONS), None)
                        if ext is None:
                            imageless += 1
                            continue
                        img = decode_bytes(members[ext], ext)
                        if img is None:
                            corrupt += 1
                            continue
                        colour = colour or img.shape[0] >= 3
                        images.append(to_channels(resize_center_crop(img, size), True).numpy())
                        labels.append(_label(members))
                        captions.append(_text(members[_CAPTION]) if _CAPTION in members else None)
                    if getattr(tar.fileobj, "comptype", "tar") == "tar" and not _ends_archive(path, tar.offset):
                        raise tarfile.ReadError("truncated: no end-of-archive marker after the last member")
            except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
                error = f"{type(exc).__name__}: {exc}"
            while reader.readinto(bytearray(1 << 20)):  # the rest of the file, for its sha256
                pass
    finally:
        reader.close()
    stacked = np.stack(images) if images else np.zeros((0, 3, size, size), np.uint8)
    return {
        "images": stacked,
        "labels": labels,
        "captions": captions,
        "colour": colour,
        "record": {
            "name": Path(path).name,
            "bytes": reader.bytes,
            "sha256": reader.sha256.hexdigest(),
            "samples": samples,
            "images": len(images),
            "corrupt": corrupt + imageless,
            "imageless": imageless,
            **({"error": error} if error else {}),
        },
    }


def label_classes(
    tokens: dict[str, list[Label]],
) -> tuple[list[str], dict[str, list[int]]]:
    """The classes and each split's int labels from the label tokens of all shards: class names
    (``.cls`` / ``.label``, or any name at all) give the sorted names seen, integers alone
    (``.cls``) the classes 0..max; a sample without a label (or a negative ``.cls``) is -1.
    ``.txt`` tokens are captions, ignored when any sample has a ``.cls`` / ``.label``; in a store
    with no other labels they are read as class names, with a deprecation warning."""
    if not any(t is not None and not isinstance(t, dict) for ts in tokens.values() for t in ts):
        if any(isinstance(t, dict) for ts in tokens.values() for t in ts):
            warnings.warn(
                "the shards' only labels are .txt members, read as class names; .txt is a caption in "
                "WebDataset and open_clip, and a later version will not read it as a label: name the "
                "label member .cls (an integer or a class name) or .label",
                FutureWarning,
                stacklevel=2,
            )
        named = {n: [t[_CAPTION] if isinstance(t, dict) else t for t in ts] for n, ts in tokens.items()}
    else:
        named = {n: [None if isinstance(t, dict) else t for t in ts] for n, ts in tokens.items()}
    return _classes(named)


def _classes(tokens: dict[str, list[int | str | None]]) -> tuple[list[str], dict[str, list[int]]]:
    seen = [t for ts in tokens.values() for t in ts if t is not None]
    if any(isinstance(t, str) for t in seen):
        classes = sorted({str(t) for t in seen})
        index = {c: i for i, c in enumerate(classes)}
        ints = {n: [-1 if t is None else index[str(t)] for t in ts] for n, ts in tokens.items()}
    elif seen:
        classes = [str(i) for i in range(max(int(t) for t in seen) + 1)]
        ints = {n: [-1 if t is None or int(t) < 0 else int(t) for t in ts] for n, ts in tokens.items()}
    else:
        classes = []
        ints = {n: [-1] * len(ts) for n, ts in tokens.items()}
    return classes, ints


def read_caption_shards(source: str, size: int) -> tuple[Tensor, list[str]] | None:
    """Images with captions from WebDataset-style shards (an image and a ``.txt`` caption per
    sample), decoded, resized and centre-cropped to size × size RGB as ``prepare`` does, for an
    image–text run: (uint8 (N, 3, S, S), N captions), samples without a caption left out; None
    when SOURCE names no shards. A damaged shard or fewer than 2 captioned images is a UserError."""
    paths = shard_source(source)
    if paths is None:
        return None
    images: list[np.ndarray] = []
    captions: list[str] = []
    for path in paths:
        shard = read_shard(str(path), size)
        if "error" in shard["record"]:
            raise UserError(f"shard {str(path)!r} cannot be read: {shard['record']['error']}")
        keep = [i for i, caption in enumerate(shard["captions"]) if caption]
        images.extend(shard["images"][keep])
        captions.extend(shard["captions"][i] for i in keep)
    if len(captions) < 2:
        raise UserError(f"{source!r}: found {len(captions)} image(s) with a .txt caption; need at least 2")
    return torch.from_numpy(np.stack(images)), captions
