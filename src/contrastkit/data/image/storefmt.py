"""The image store's files on disk: their names, the manifest and its verification.

A store (see contrastkit.data.image.store) is a folder of, per split, ``SPLIT.images.u8`` (raw
uint8 (N, C, S, S)) and ``SPLIT.labels.npy`` (int64 (N,)), and ``manifest.json``, written last.
While ``prepare`` runs, ``.progress.json`` records how far it got, labels are appended to
``SPLIT.labels.i64`` (raw int64) or, for tar shards, ``SPLIT.labels.jsonl`` (one label token per
line); ``.verified.json`` remembers that the files matched their sha256. These names are
spelled here only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from contrastkit.errors import UserError

FORMAT = "contrastkit-image-store"
VERSION = 1
MANIFEST = "manifest.json"
PROGRESS = ".progress.json"
VERIFIED = ".verified.json"
RESIZE_RULE = (
    "shorter side resized to SIZE (bilinear, antialiased, rounded to uint8), then centre-cropped "
    "to SIZE x SIZE; alpha dropped; gray repeated to RGB when any image is colour"
)
HASH_BLOCK = 1 << 24  # bytes read at a time while hashing


def images_file(split: str) -> str:
    """The images of `split`: raw C-ordered uint8 (N, C, S, S), no header."""
    return f"{split}.images.u8"


def labels_file(split: str) -> str:
    """The labels of `split` in a finished store: int64 (N,) as ``.npy``, -1 for unlabeled."""
    return f"{split}.labels.npy"


def raw_labels_file(split: str) -> str:
    """The labels of `split` while it is written: raw int64, one per image."""
    return f"{split}.labels.i64"


def label_tokens_file(split: str) -> str:
    """The labels of a tar-shard split while it is written: one JSON token per line."""
    return f"{split}.labels.jsonl"


def gray_images_file(split: str) -> str:
    """The one-channel copy of `split`'s images while it is written (then it replaces them)."""
    return images_file(split) + ".gray"


def save_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` to `path` atomically (a temporary file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    """A file's manifest entry: name, bytes, sha256."""
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


# ----------------------------------------------------------------------------- reading


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


def verified_marker(root: Path, entries: list[dict[str, Any]], manifest_hash: str) -> dict[str, Any]:
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
    marker = verified_marker(root, entries, manifest_hash)
    try:
        if json.loads((root / VERIFIED).read_text()) == marker:
            return
    except (OSError, ValueError):
        pass
    for entry in entries:
        if sha256_file(root / entry["name"]) != entry["sha256"]:
            raise UserError(
                f"store {root} is damaged: {entry['name']} does not match its sha256 in {MANIFEST}; prepare it again"
            )
    with contextlib.suppress(OSError):  # a read-only store is checked on every open
        save_json(root / VERIFIED, marker)
