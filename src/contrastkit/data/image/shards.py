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
(integer text) or ``.txt`` / ``.label`` (a class name; classes are then the sorted names seen in
all shards); without any, the store is unlabelled (label -1). Samples whose image does not decode,
or without an image, are skipped and counted (``corrupt``; the imageless ones also as
``imageless``); a truncated or unreadable archive keeps the samples read before the damage and
records the error with the shard.

Resume granularity is the shard: after each shard, the images appended so far, the labels and the
shard's record (name, bytes, sha256, samples, corrupt) go into ``.progress.json``; a prepare killed
mid-shard truncates the files back to the last finished shard and reads that shard again.
Images are written as RGB while reading; when no image of any shard was colour, the store is
rewritten as one channel at the end (gray images repeated to RGB have three equal channels), so a
gray collection gives the same store as the same images in a folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import time
import warnings
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contrastkit.data.image.datasets import _resize_center_crop, _to_channels
from contrastkit.errors import UserError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
SHARD_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp")
_PIL_ONLY = ("ppm", "bmp")
_LABEL_CLS = "cls"
_LABEL_NAMES = ("txt", "label")
_SPLIT_PREFIX = re.compile(r"^(train|test|val|valid|validation|unlabeled)[-_.]")
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")
_KEY = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


def is_tar(path: Path) -> bool:
    return path.name.lower().endswith(TAR_SUFFIXES)


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
        images = [p for p in children if p.suffix.lower().lstrip(".") in (*SHARD_IMAGE_EXTENSIONS, "gif")]
        if tars and not images and not any(p.is_dir() for p in children):
            return tars
    return None


def shards_plan(shards: list[Path], size: int, source: str) -> dict[str, Any]:
    """The plan of a shard source: splits by shard name prefix, sizes and mtimes in the digest."""
    from contrastkit.data.image.store import _Split

    prefixes = [_SPLIT_PREFIX.match(p.name) for p in shards]
    by_split: dict[str, list[Path]] = {}
    for p, m in zip(shards, prefixes, strict=True):
        name = m.group(1) if all(prefixes) and m is not None else "train"
        by_split.setdefault(name, []).append(p)
    digest = hashlib.sha256()
    for p in shards:
        st = p.stat()
        digest.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {
        "source": source if _BRACES.search(source) else str(Path(source).expanduser().resolve()),
        "kind": "shards",
        "size": size,
        "channels": 3,  # while writing; 1 at the end when no image was colour
        "classes": [],  # known at the end, from all shards
        "digest": digest.hexdigest(),
        "splits": [_Split(name, files, [], len(files)) for name, files in by_split.items()],
    }


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


def decode_bytes(data: bytes, ext: str) -> torch.Tensor | None:
    """An encoded image as uint8 (C, H, W) with C in 1..4 (as ``_decode_one`` gives for a file),
    or None when it cannot be decoded."""
    img: torch.Tensor | None = None
    if ext not in _PIL_ONLY:
        from torchvision.io import ImageReadMode, decode_image

        try:
            buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs; they still work
                warnings.simplefilter("ignore", DeprecationWarning)
                img = decode_image(buf, mode=ImageReadMode.UNCHANGED, apply_exif_orientation=True)
        except (RuntimeError, ValueError, OSError):
            img = None
    if img is None:
        img = _decode_pil(data)
    if img is None:
        return None
    if img.dim() == 4:
        img = img[0]
    if img.dim() != 3 or img.shape[0] not in (1, 2, 3, 4) or min(img.shape[1:]) < 1:
        return None
    return img


def _decode_pil(data: bytes) -> torch.Tensor | None:
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as opened:
            im: Image.Image = ImageOps.exif_transpose(opened)
            if im.mode not in ("L", "LA", "RGB", "RGBA"):
                im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except Exception:  # PIL raises many types for a broken file
        return None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


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


def _label(members: dict[str, bytes]) -> int | str | None:
    if _LABEL_CLS in members:
        try:
            return int(members[_LABEL_CLS].decode().strip())
        except (UnicodeDecodeError, ValueError):
            return None
    for ext in _LABEL_NAMES:
        if ext in members:
            try:
                name = members[ext].decode().strip()
            except UnicodeDecodeError:
                return None
            return name or None
    return None


def _ends_archive(path: str, offset: int) -> bool:
    """Whether an uncompressed tar holds its end marker (two zero blocks) at `offset`: tarfile
    stops silently when a file is cut at a member boundary."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        marker = fh.read(2 * tarfile.BLOCKSIZE)
    return len(marker) == 2 * tarfile.BLOCKSIZE and not marker.strip(b"\0")


def read_shard(path: str, size: int) -> dict[str, Any]:
    """Decode one shard: images (k, 3, S, S) uint8, k label tokens (int, str or None), whether
    any image was colour, counts, and the shard's bytes and sha256."""
    images: list[np.ndarray] = []
    labels: list[int | str | None] = []
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
                        images.append(_to_channels(_resize_center_crop(img, size), True).numpy())
                        labels.append(_label(members))
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


def _shard_results(paths: list[Path], size: int, workers: int) -> Iterator[dict[str, Any]]:
    """read_shard of each path, in order; `workers` processes (0 or 1: in this process)."""
    if workers <= 1:
        for p in paths:
            yield read_shard(str(p), size)
        return
    from contrastkit.data.image.store import decode_pool

    with decode_pool(workers) as pool:
        pending: deque[Future[dict[str, Any]]] = deque()
        todo = iter(paths)
        for p in todo:  # one decoded shard per worker (plus one) in memory at most
            pending.append(pool.submit(read_shard, str(p), size))
            if len(pending) > workers:
                break
        while pending:
            fut = pending.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(read_shard, str(nxt), size))
            yield fut.result()


# ----------------------------------------------------------------------------- writing a store


def labels_tmp(split: str) -> str:
    return f"{split}.labels.jsonl"


def resume_files(out: Path, state: dict[str, Any], plan: dict[str, Any]) -> None:
    """Cut the images and label files back to the last finished shard (a kill mid-shard)."""
    for split in plan["splits"]:
        rec = state["splits"][split.name]
        row = channels_of(state, split.name) * plan["size"] ** 2
        files = [(out / f"{split.name}.images.u8", rec["written"] * row)]
        if "classes" not in state:  # the label tokens are still the appended lines
            files.append((out / labels_tmp(split.name), rec.get("labels_bytes", 0)))
        for path, length in files:
            if path.exists() and path.stat().st_size > length:
                os.truncate(path, length)
            elif rec["done"] and (not path.exists() or path.stat().st_size < length):
                raise UserError(f"{path} is shorter than its recorded progress; delete {out} and prepare again")


def write_shard_split(
    out: Path,
    plan: dict[str, Any],
    split: Any,
    state: dict[str, Any],
    workers: int,
    progress: bool,
    stop_after: int | None,
) -> int:
    """Append one split's shards, from the first unfinished one; returns images written now."""
    from tqdm import tqdm

    from contrastkit.data.image.store import PROGRESS, StoreInterrupted, _save_json, images_file

    rec = state["splits"][split.name]
    if rec["done"] >= split.count:
        return 0
    rec.setdefault("labels_bytes", 0)
    state.setdefault("shards", [])
    state.setdefault("colour", False)
    written_now = 0
    todo = split.files[rec["done"] :]
    bar = tqdm(total=None, initial=rec["written"], unit="img", desc=f"prepare {split.name}",
               disable=not progress, dynamic_ncols=True, leave=True)
    started = time.monotonic()
    try:
        with open(out / images_file(split.name), "ab") as img_fh, open(out / labels_tmp(split.name), "ab") as lab_fh:
            for result in _shard_results(todo, plan["size"], workers):
                img_fh.write(np.ascontiguousarray(result["images"]).tobytes())
                lab_fh.write("".join(json.dumps(t) + "\n" for t in result["labels"]).encode())
                img_fh.flush()
                lab_fh.flush()
                os.fsync(img_fh.fileno())
                os.fsync(lab_fh.fileno())
                n = len(result["labels"])
                rec["done"] += 1
                rec["written"] += n
                rec["corrupt"] += result["record"]["corrupt"]
                rec["labels_bytes"] = lab_fh.tell()
                state["colour"] = state["colour"] or result["colour"]
                state["shards"].append({"split": split.name, **result["record"]})
                _save_json(out / PROGRESS, state)
                written_now += n
                bar.update(n)
                bar.set_postfix(shards=f"{rec['done']}/{split.count}",
                                rate=f"{written_now / max(1e-9, time.monotonic() - started):.0f} img/s")
                if stop_after is not None and written_now >= stop_after:
                    raise StoreInterrupted(f"stopped after {written_now} images")
    finally:
        bar.close()
    return written_now


def finish_shards(out: Path, plan: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """Gray stores to one channel, labels (tokens → int64 with the classes of all shards); what
    the manifest records of the shards. Each step is recorded, so a kill here resumes too."""
    from contrastkit.data.image.store import PROGRESS, _save_json

    if not state.get("colour", False):
        _to_gray(out, plan, state)
    if "classes" not in state:
        tokens: dict[str, list[int | str | None]] = {}
        for split in plan["splits"]:
            path = out / labels_tmp(split.name)
            tokens[split.name] = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
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
        for name, values in ints.items():
            np.asarray(values, dtype=np.int64).tofile(out / f"{name}.labels.i64")
        state["classes"] = classes
        _save_json(out / PROGRESS, state)
    for split in plan["splits"]:
        (out / labels_tmp(split.name)).unlink(missing_ok=True)
    plan["classes"] = state["classes"]
    return {"shards": state.get("shards", [])}


def channels_of(state: dict[str, Any], split: str) -> int:
    """The channels of a split's images file as it is now (3 while writing, 1 once made gray)."""
    return 1 if split in state.get("gray", []) else 3


def _to_gray(out: Path, plan: dict[str, Any], state: dict[str, Any], block: int = 1024) -> None:
    """Rewrite the RGB files as one channel (channel 0 of images that were gray everywhere)."""
    from contrastkit.data.image.store import PROGRESS, _save_json

    s = plan["size"]
    state.setdefault("gray", [])
    for split in plan["splits"]:
        if split.name in state["gray"]:
            continue
        n = state["splits"][split.name]["written"]
        src = out / f"{split.name}.images.u8"
        dst = src.with_name(src.name + ".gray")
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            for b in range(0, n, block):
                k = min(block, n - b)
                rgb = np.frombuffer(fin.read(k * 3 * s * s), np.uint8).reshape(k, 3, s, s)
                fout.write(np.ascontiguousarray(rgb[:, :1]).tobytes())
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(dst, src)
        state["gray"].append(split.name)
        _save_json(out / PROGRESS, state)
    plan["channels"] = 1
