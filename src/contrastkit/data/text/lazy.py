"""Training text read lazily from large ``.txt`` / ``.jsonl`` files (``text.lazy: true``).

The file is scanned once into a *line-offset index*: a numpy int64 array of the byte offsets of
the rows kept (8 bytes per row, saved as ``.npy`` in a cache folder the caller chooses — a run's
``data/text_index/``, never next to the user's file). Row ``i`` is then read by seeking to its
offset and parsing that one line, so memory does not grow with the file: the index is opened
memory-mapped and a :class:`LazyText` holds no list of the lines (pickled, e.g. into a worker
process, it is a few hundred bytes).

The rows kept are exactly those of the eager readers (:func:`read_sentences` /
:func:`read_pairs`): blank lines skipped, values stripped, sentences de-duplicated (first
occurrence kept; by a 64-bit hash of the text), rows filtered by ``where``, pairs without an
empty cell, then at most ``limit`` rows. (Lines end at ``\n`` only: a lone ``\r``, which the
eager text-mode reader also treats as a line end, stays inside the line.)

Formats: ``.txt`` (one sentence per line) and ``.jsonl`` / ``.ndjson`` / ``.json`` (one JSON
object per line, named fields; sentences from one field, pairs from 2–3), each optionally
gzip-compressed (``.gz``): a gzip file is decompressed **once** into the cache folder (a plain
copy, which is then indexed and seeked like any other file). CSV / TSV tables and ``sick:``
sources are read eagerly.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from array import array
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from contrastkit.data.text.corpus import parse_jsonl_row
from contrastkit.errors import UserError

LINE_SUFFIXES: tuple[str, ...] = (".txt",)
JSONL_SUFFIXES: tuple[str, ...] = (".jsonl", ".ndjson", ".json")
INDEX_VERSION = 1


def lazy_format(spec: str) -> str:
    """``lines`` or ``jsonl`` for a file the lazy reader takes (UserError for anything else)."""
    path = Path(spec)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in LINE_SUFFIXES:
        return "lines"
    if last in JSONL_SUFFIXES:
        return "jsonl"
    raise UserError(
        f"text.lazy reads .txt and .jsonl files (optionally .gz), not {spec!r}; "
        "set text.lazy=false to read it eagerly"
    )


def _plain_file(path: Path, cache: Path) -> Path:
    """The file itself, or for ``.gz`` its decompressed copy in ``cache`` (made once)."""
    if path.suffix.lower() != ".gz":
        return path
    out = cache / path.stem
    stamp = cache / (path.stem + ".source.json")
    key = _source_key(path)
    if out.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == key:
        return out
    tmp = out.with_name(out.name + ".part")
    try:
        with gzip.open(path, "rb") as src, tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, EOFError) as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{path}: cannot decompress ({exc})") from None
    os.replace(tmp, out)
    stamp.write_text(json.dumps(key))
    return out


def _source_key(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _decode(line: bytes) -> str:
    return line.decode("utf-8", errors="replace")


def build_offsets(
    path: Path,
    fmt: str,
    columns: Sequence[str],
    where: Mapping[str, Any] | None,
    *,
    unique: bool,
    limit: int | None,
    source: str,
) -> np.ndarray:
    """Byte offsets (int64) of the rows the eager reader would keep, in file order."""
    wanted = {
        str(k): {str(x) for x in v} if isinstance(v, list | tuple | set) else {str(v)}
        for k, v in (where or {}).items()
    }
    offsets = array("q")
    hashes = array("q")
    seen: set[str] = set()
    offset = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            start, offset = offset, offset + len(line)
            if fmt == "lines":
                value = _decode(line).strip()
                if not value:
                    continue
                values = [value]
            else:
                row = parse_jsonl_row(_decode(line), source, number)
                if row is None:
                    continue
                seen.update(row)
                if any(row.get(k, "") not in vals for k, vals in wanted.items()):
                    continue
                values = [row.get(c, "").strip() for c in columns]
                if not all(values):
                    continue
            offsets.append(start)
            if unique:
                hashes.append(hash(values[0]))
    if fmt == "jsonl":
        for name in [*wanted, *columns]:
            if name not in seen:
                raise UserError(f"column {name!r} is not in {source}; columns: {', '.join(sorted(seen))}")
    out = np.frombuffer(offsets, dtype=np.int64) if offsets else np.zeros(0, dtype=np.int64)
    if unique and len(out):
        _, first = np.unique(np.frombuffer(hashes, dtype=np.int64), return_index=True)
        out = out[np.sort(first)]
    if limit is not None:
        out = out[:limit]
    return np.ascontiguousarray(out, dtype=np.int64)


class LazyText:
    """Aligned text columns read from a file by line offset: one column (sentences) or 2–3
    (anchor, positive[, negative]). ``take(rows)`` → one list of texts per column."""

    def __init__(self, path: Path, offsets_file: Path, fmt: str, columns: Sequence[str], source: str) -> None:
        self.path = Path(path)
        self.offsets_file = Path(offsets_file)
        self.fmt = fmt
        self.fields = list(columns)
        self.source = source
        self.n_columns = max(1, len(self.fields))
        self._open()

    def _open(self) -> None:
        self._offsets: np.ndarray = np.load(self.offsets_file, mmap_mode="r")
        self._handle: IO[bytes] | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_offsets", "_handle", "_pid"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def __len__(self) -> int:
        return int(self._offsets.shape[0])

    def _file(self) -> IO[bytes]:
        if self._handle is None or self._pid != os.getpid():  # a forked worker opens its own
            self._handle = self.path.open("rb")
            self._pid = os.getpid()
        return self._handle

    def _parse(self, line: bytes) -> list[str]:
        if self.fmt == "lines":
            return [_decode(line).strip()]
        row = json.loads(_decode(line))
        return [("" if row.get(c) is None else str(row.get(c))).strip() for c in self.fields]

    def row(self, i: int) -> list[str]:
        """The texts of row ``i`` (one per column)."""
        handle = self._file()
        handle.seek(int(self._offsets[i]))
        return self._parse(handle.readline())

    def take(self, rows: Sequence[int]) -> list[list[str]]:
        """One list of texts per column for the given rows."""
        per_row = [self.row(i) for i in rows]
        return [[r[j] for r in per_row] for j in range(self.n_columns)]

    def iter_texts(self) -> Iterator[str]:
        """Every text of every row, streamed in file order (for a tokenizer's vocabulary)."""
        for i in range(len(self)):
            yield from self.row(i)


def open_lazy_text(
    spec: str,
    columns: Sequence[str],
    where: Mapping[str, Any] | None,
    cache: Path,
    *,
    pairs: bool,
    limit: int | None = None,
) -> LazyText:
    """Index ``spec`` into ``cache`` (reused when the file, columns, filter and limit are
    unchanged) and open it lazily: sentences (``pairs=False``) or 2–3 aligned columns."""
    fmt = lazy_format(spec)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"text data {spec!r} does not exist; give a .txt or .jsonl file")
    cols = list(columns)
    if pairs and len(cols) not in (2, 3):
        raise UserError(f"pairs need 2 columns (anchor, positive) or 3 (anchor, positive, negative); got {cols}")
    if fmt == "lines" and (cols or where):
        raise UserError(f"text.lazy reads {spec!r} as one sentence per line: it takes no columns or filter")
    if fmt == "jsonl" and not pairs and len(cols) != 1:
        raise UserError(f"text.lazy reads sentences from one field of {spec!r}: set text.train_columns=[FIELD]")
    cache.mkdir(parents=True, exist_ok=True)
    plain = _plain_file(path, cache)
    key = {
        "version": INDEX_VERSION, "source": _source_key(path), "columns": cols, "filter": where or None,
        "unique": not pairs, "limit": limit,
    }
    name = path.name.replace(os.sep, "_")
    offsets_file, stamp = cache / f"{name}.offsets.npy", cache / f"{name}.index.json"
    if not (offsets_file.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == key):
        offsets = build_offsets(plain, fmt, cols, where, unique=not pairs, limit=limit, source=str(path))
        tmp = offsets_file.with_name(offsets_file.name + ".part.npy")
        np.save(tmp, offsets)
        os.replace(tmp, offsets_file)
        stamp.write_text(json.dumps(key))
    text = LazyText(plain, offsets_file, fmt, cols, str(path))
    what = "complete pair(s)" if pairs else "sentence(s)"
    if len(text) < 2:
        raise UserError(f"{spec!r} holds {len(text)} {what}; contrastive training needs at least 2")
    return text
