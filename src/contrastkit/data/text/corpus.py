"""Text data from files: sentences one per line, and tables (CSV / TSV / JSONL) with named columns.

A *data spec* names what to read: a path (``.txt`` = one sentence or passage per line unless it
holds a tab-separated table with the asked columns; ``.csv``, ``.tsv``, ``.jsonl`` / ``.json``
tables), or a named source ``sick:SPLIT`` (SICK, Marelli et al. 2014: train, trial, test, all),
whose SICK.txt is looked for in the one order :data:`SICK_ORDER` states (:func:`find_sick`).

Hugging Face ``datasets`` sources (:func:`hf_source`, the ``datasets`` package of the ``text``
extra) are tables too: a ``.parquet`` file; a folder written by ``save_to_disk`` (``FOLDER`` or,
for a ``DatasetDict``, ``FOLDER:SPLIT``); ``hf:FILE`` (a local .parquet / .jsonl / .json / .csv /
.tsv read by ``datasets``' own parsers); ``hf:NAME[:CONFIG]:SPLIT`` (a dataset of the Hugging Face
hub, downloaded and cached by ``datasets``: needs the network once). Their columns are named as
for any table (``text.train_columns``).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contrastkit.errors import UserError, check_choice

TABLE_FORMATS: tuple[str, ...] = ("csv", "tsv", "jsonl")
SICK_SPLITS: dict[str, str | None] = {"train": "TRAIN", "trial": "TRIAL", "test": "TEST", "all": None}
SICK_COLUMNS: tuple[str, str, str] = ("sentence_A", "sentence_B", "relatedness_score")
SICK_FILE = "SICK.txt"
# the one search order for SICK.txt, as README, `contrastkit doctor` and the not-found error state it
SICK_ORDER = (
    "1. text.data_root (or sequences.data_root: that folder or its sick/), 2. $CONTRASTKIT_DATA/sick, "
    "3. ~/.cache/contrastkit/sick ($XDG_CACHE_HOME/contrastkit/sick when set), "
    "4. ../shared/data/sick from the working folder"
)

csv.field_size_limit(1 << 24)


@dataclass
class TextTable:
    """Rows of a table as strings, with the file it came from (for messages)."""

    columns: list[str]
    rows: list[dict[str, str]]
    source: str

    def column(self, name: str) -> list[str]:
        """All values of one column (UserError naming the available ones if it is missing)."""
        if name not in self.columns:
            from contrastkit.errors import closest

            raise UserError(
                f"column {name!r} is not in {self.source}{closest(name, self.columns)}; "
                f"columns: {', '.join(self.columns)}"
            )
        return [row.get(name, "") for row in self.rows]


@dataclass
class TextPairs:
    """(anchor, positive[, hard negative]) training examples."""

    anchors: list[str]
    positives: list[str]
    negatives: list[str] | None = None

    def __len__(self) -> int:
        return len(self.anchors)


@dataclass
class STSData:
    """Sentence pairs with a human similarity score (STS-B, SICK-R, ...)."""

    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]

    def __len__(self) -> int:
        return len(self.scores)


# ----------------------------------------------------------------------------- named sources


def sick_search_path(data_root: str | None = None) -> list[Path]:
    """Folders searched for SICK.txt, in the order :data:`SICK_ORDER` states."""
    places: list[Path] = []
    if data_root:
        places += [Path(data_root).expanduser(), Path(data_root).expanduser() / "sick"]
    env = os.environ.get("CONTRASTKIT_DATA")
    if env:
        places.append(Path(env).expanduser() / "sick")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    places.append(Path(base) / "contrastkit" / "sick")
    places.append(Path("..") / "shared" / "data" / "sick")
    return places


def find_sick(data_root: str | None = None) -> Path:
    """Path of SICK.txt: the first of the folders :func:`sick_search_path` lists that holds it
    (UserError listing them, in order, when none does)."""
    places = sick_search_path(data_root)
    for folder in places:
        if (folder / SICK_FILE).is_file():
            return folder / SICK_FILE
    raise UserError(
        f"SICK data set not found: no {SICK_FILE} in {', '.join(str(p) for p in places)} "
        f"(searched in this order: {SICK_ORDER}); put SICK.txt (Marelli et al. 2014) in one of them "
        "or set text.data_root"
    )


@dataclass
class ResolvedSpec:
    """A data spec resolved to a file, with the filter and default columns it implies."""

    path: Path
    filter: dict[str, Any] | None
    default_columns: tuple[str, ...] | None
    fmt: str | None


def resolve_spec(spec: str, data_root: str | None = None) -> ResolvedSpec:
    """Turn a data spec (path or ``sick:SPLIT``) into a file, row filter and default columns."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"a text data spec must be a non-empty string, got {spec!r}")
    name, sep, split = spec.partition(":")
    if sep and name == "sick":
        check_choice("SICK split", split, SICK_SPLITS)
        value = SICK_SPLITS[split]
        return ResolvedSpec(
            find_sick(data_root),
            {"SemEval_set": value} if value else None,
            SICK_COLUMNS,
            "tsv",
        )
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(
            f"text data {spec!r} does not exist; give a file (.txt, .csv, .tsv, .jsonl, .parquet), a folder "
            "saved by datasets' save_to_disk, hf:NAME[:CONFIG]:SPLIT or sick:SPLIT"
        )
    return ResolvedSpec(path, None, None, None)


# ----------------------------------------------------------------------------- Hugging Face datasets

HF_PREFIX = "hf:"
HF_FILE_BUILDERS: dict[str, str] = {
    ".parquet": "parquet", ".jsonl": "json", ".json": "json", ".ndjson": "json", ".csv": "csv", ".tsv": "csv", ".tab": "csv",
}


@dataclass(frozen=True)
class HFSource:
    """A table read through Hugging Face ``datasets``: ``kind`` is ``file`` (a local data file),
    ``disk`` (a ``save_to_disk`` folder) or ``hub`` (a dataset name on the hub)."""

    kind: str
    location: str
    split: str | None = None
    config: str | None = None


def _saved_dataset(folder: Path) -> bool:
    """Whether ``folder`` was written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()
    )


def hf_source(spec: str) -> HFSource | None:
    """The ``datasets`` source a text data spec names (see the module's text), or None for a spec
    the plain readers take."""
    if not isinstance(spec, str):
        return None
    explicit = spec.startswith(HF_PREFIX)
    rest = spec[len(HF_PREFIX) :] if explicit else spec
    path = Path(rest).expanduser()
    if path.is_file() and (explicit or path.suffix.lower() == ".parquet"):
        return HFSource("file", str(path))
    if path.is_dir() and (explicit or _saved_dataset(path)):
        return HFSource("disk" if _saved_dataset(path) else "file", str(path))
    head, sep, split = rest.rpartition(":")
    if sep and head and Path(head).expanduser().is_dir() and _saved_dataset(Path(head).expanduser()):
        return HFSource("disk", str(Path(head).expanduser()), split or None)
    if not explicit:
        return None
    if Path(rest).suffix.lower() in HF_FILE_BUILDERS or rest.startswith((".", "/", "~")):
        raise UserError(f"{spec!r}: no such file or folder {rest!r}")
    parts = rest.split(":")
    if not parts[0] or len(parts) > 3 or not all(parts):
        raise UserError(f"{spec!r}: a hub dataset is hf:NAME, hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT (local files: hf:PATH)")
    name, config, split_name = parts[0], (parts[1] if len(parts) == 3 else None), (parts[-1] if len(parts) > 1 else None)
    return HFSource("hub", name, split_name, config)


def require_datasets() -> Any:
    """The ``datasets`` module, or a one-line UserError saying how to install it."""
    try:
        import datasets
    except ImportError:
        from contrastkit.errors import install_hint

        raise UserError(f"reading Hugging Face datasets sources needs the datasets package: {install_hint('text')}") from None
    return datasets


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def load_hf_dataset(spec: str) -> Any:
    """The ``datasets.Dataset`` a data spec names (one split; a one-line UserError when it cannot
    be read)."""
    src = hf_source(spec)
    if src is None:
        raise UserError(f"{spec!r} is not a Hugging Face datasets source")
    ds = require_datasets()
    bars = ds.is_progress_bar_enabled()
    ds.disable_progress_bars()  # one line per file read is noise in a training log
    try:
        if src.kind == "disk":
            loaded = ds.load_from_disk(src.location)
            if isinstance(loaded, ds.DatasetDict):
                splits = list(loaded)
                split = src.split or ("train" if "train" in splits else splits[0] if len(splits) == 1 else None)
                if split is None or split not in splits:
                    raise UserError(
                        f"{spec!r} holds the splits {', '.join(splits)}; name one as {src.location}:SPLIT"
                    )
                return loaded[split]
            if src.split:
                raise UserError(f"{src.location!r} holds one dataset, not splits; drop ':{src.split}'")
            return loaded
        if src.kind == "file":
            path = Path(src.location)
            if path.is_dir():
                return ds.load_dataset(str(path), split="train")
            builder = HF_FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise UserError(
                    f"{spec!r}: datasets reads {', '.join(sorted(HF_FILE_BUILDERS))} files, not {path.suffix or 'this file'}"
                )
            extra = {"delimiter": "\t"} if path.suffix.lower() in (".tsv", ".tab") else {}
            return ds.load_dataset(builder, data_files=str(path), split="train", **extra)
        return ds.load_dataset(src.location, src.config, split=src.split or "train")
    except UserError:
        raise
    except Exception as exc:  # datasets' own errors (a missing file, a bad row, no network): one line
        raise UserError(f"could not read {spec!r} with datasets: {_first_line(exc)}") from None
    finally:
        if bars:
            ds.enable_progress_bars()


def read_hf_table(spec: str, columns: Sequence[str]) -> TextTable:
    """The named columns of a ``datasets`` source as string rows (None becomes "")."""
    dataset = load_hf_dataset(spec)
    names = list(dataset.column_names)
    if not columns:
        raise UserError(f"{spec!r} is a table: name its text columns (columns: {', '.join(names)})")
    wanted = list(dict.fromkeys(columns))
    for c in wanted:
        if c not in names:
            from contrastkit.errors import closest

            raise UserError(f"column {c!r} is not in {spec}{closest(c, names)}; columns: {', '.join(names)}")
    data = dataset.select_columns(wanted).to_dict()
    for c in wanted:
        sample = next((v for v in data[c] if v is not None), None)
        if isinstance(sample, list | dict):
            raise UserError(f"column {c!r} of {spec} holds {type(sample).__name__}s; text columns hold strings")
    values = [["" if v is None else str(v) for v in data[c]] for c in wanted]
    rows = [dict(zip(wanted, row, strict=True)) for row in zip(*values, strict=True)]
    if not rows:
        raise UserError(f"table {spec!r} has no rows")
    return TextTable(wanted, rows, spec)


# ----------------------------------------------------------------------------- readers


def _fmt_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    return "lines"


def read_lines(path: str | Path) -> list[str]:
    """Non-empty, stripped lines of a UTF-8 text file (one sentence or passage per line)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"text file {str(path)!r} does not exist")
    with path.open(encoding="utf-8", errors="replace") as handle:
        lines = [line.strip() for line in handle]
    out = [line for line in lines if line]
    if not out:
        raise UserError(f"text file {str(path)!r} has no non-empty lines")
    return out


def parse_jsonl_row(line: str, source: str | Path, number: int) -> dict[str, str] | None:
    """The fields of one JSONL line as strings (None for a blank line; a one-line UserError
    naming the file and line number for a line that is not a JSON object)."""
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        raise UserError(f"{source}: line {number} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise UserError(f"{source}: line {number} must be a JSON object, got {type(obj).__name__}")
    return {str(k): "" if v is None else str(v) for k, v in obj.items()}


def read_table(path: str | Path, fmt: str | None = None) -> TextTable:
    """A CSV, TSV (header row) or JSONL (one object per line) file as string rows."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"table {str(path)!r} does not exist")
    fmt = fmt or _fmt_of(path)
    if fmt == "lines":
        fmt = "tsv"
    check_choice("table format", fmt, TABLE_FORMATS)
    rows: list[dict[str, str]] = []
    columns: list[str] = []
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        if fmt == "jsonl":
            for number, line in enumerate(handle, 1):
                row = parse_jsonl_row(line, path, number)
                if row is None:
                    continue
                for key in row:
                    if key not in columns:
                        columns.append(key)
                rows.append(row)
        else:
            if fmt == "csv":
                reader = csv.DictReader(handle)
            else:  # TSV: tabs separate, quotes are text
                reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            columns = [c for c in (reader.fieldnames or []) if c is not None]
            for row in reader:
                rows.append({k: (v or "") for k, v in row.items() if k is not None})
    if not rows:
        raise UserError(f"table {str(path)!r} has no rows")
    return TextTable(columns, rows, str(path))


def filter_rows(table: TextTable, where: Mapping[str, Any] | None) -> TextTable:
    """Rows whose columns equal the given values (a list of values means any of them)."""
    if not where:
        return table
    for key in where:
        table.column(str(key))  # raises for a missing column
    wanted = {
        str(k): {str(x) for x in v} if isinstance(v, list | tuple | set) else {str(v)}
        for k, v in where.items()
    }
    rows = [r for r in table.rows if all(r.get(k, "") in vals for k, vals in wanted.items())]
    if not rows:
        raise UserError(f"no rows of {table.source} match the filter {dict(where)}")
    return TextTable(table.columns, rows, table.source)


def _table_for(
    spec: str, where: Mapping[str, Any] | None, data_root: str | None, columns: Sequence[str] = ()
) -> tuple[TextTable, tuple[str, ...] | None]:
    """The rows of a spec's table that pass the filter, and the spec's default columns; a
    ``datasets`` source reads only ``columns`` (and the filter's)."""
    if hf_source(spec) is not None:
        table = read_hf_table(spec, [*columns, *(str(k) for k in (where or {}))] if columns else [])
        return filter_rows(table, where), None
    res = resolve_spec(spec, data_root)
    table = read_table(res.path, res.fmt)
    merged = {**(res.filter or {}), **(dict(where) if where else {})}
    return filter_rows(table, merged or None), res.default_columns


def _looks_tabular(path: Path, columns: Sequence[str]) -> bool:
    with path.open(encoding="utf-8", errors="replace") as handle:
        header = handle.readline().rstrip("\n").split("\t")
    return bool(columns) and all(c in header for c in columns)


def read_sentences(
    spec: str,
    columns: Sequence[str] = (),
    where: Mapping[str, Any] | None = None,
    *,
    data_root: str | None = None,
    unique: bool = True,
    limit: int | None = None,
) -> list[str]:
    """Sentences for unsupervised training: lines of a text file, or the given columns of a table.

    With ``unique`` the sentences are de-duplicated (first occurrence order kept).
    """
    res = None if hf_source(spec) is not None else resolve_spec(spec, data_root)
    if (
        res is not None and (res.fmt or _fmt_of(res.path)) == "lines" and not where
        and not (columns and _looks_tabular(res.path, columns))
    ):
        out = read_lines(res.path)
    else:
        table, default = _table_for(spec, where, data_root, columns)
        cols = list(columns) or list((default or ())[:2])
        if not cols:
            raise UserError(
                f"{spec!r} is a table: name the sentence columns in text.train_columns "
                f"(columns: {', '.join(table.columns)})"
            )
        for c in cols:
            table.column(c)  # a missing column is an error, not an empty corpus
        out = []
        for row in table.rows:
            for c in cols:
                value = row.get(c, "").strip()
                if value:
                    out.append(value)
    if unique:
        out = list(dict.fromkeys(out))
    if limit is not None:
        out = out[:limit]
    if len(out) < 2:
        raise UserError(f"{spec!r} holds {len(out)} sentence(s); contrastive training needs at least 2")
    return out


def read_pairs(
    spec: str,
    columns: Sequence[str],
    where: Mapping[str, Any] | None = None,
    *,
    data_root: str | None = None,
    limit: int | None = None,
) -> TextPairs:
    """(anchor, positive[, negative]) from a table's named columns; rows with an empty cell are skipped."""
    if len(columns) not in (2, 3):
        raise UserError(
            f"pairs need 2 columns (anchor, positive) or 3 (anchor, positive, negative); got {list(columns)}"
        )
    table, _ = _table_for(spec, where, data_root, columns)
    values = [table.column(c) for c in columns]
    keep = [i for i in range(len(table.rows)) if all(v[i].strip() for v in values)]
    if limit is not None:
        keep = keep[:limit]
    if len(keep) < 2:
        raise UserError(f"{spec!r} holds {len(keep)} complete pair(s) in columns {list(columns)}; need at least 2")
    pick = [[v[i].strip() for i in keep] for v in values]
    return TextPairs(pick[0], pick[1], pick[2] if len(pick) == 3 else None)


def read_sts(
    spec: str,
    columns: Sequence[str] = SICK_COLUMNS,
    where: Mapping[str, Any] | None = None,
    *,
    data_root: str | None = None,
) -> STSData:
    """STS-style pairs: columns (sentence1, sentence2, score); the score must parse as a number."""
    table, default = _table_for(spec, where, data_root, columns)
    cols = list(columns) if columns else list(default or ())
    if len(cols) != 3:
        raise UserError(f"STS data needs 3 columns (sentence1, sentence2, score); got {cols}")
    s1, s2, raw = (table.column(c) for c in cols)
    scores: list[float] = []
    for i, value in enumerate(raw):
        try:
            scores.append(float(value))
        except ValueError:
            raise UserError(
                f"{table.source}: score column {cols[2]!r} holds {value!r} in row {i + 1}, not a number"
            ) from None
    if len(scores) < 2:
        raise UserError(f"{spec!r} holds {len(scores)} scored pair(s); need at least 2")
    return STSData([s.strip() for s in s1], [s.strip() for s in s2], scores)
