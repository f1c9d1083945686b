"""Readers of user–item interaction files into one in-memory form (`RawInteractions`).

Formats: MovieLens 100K (`u.data`, titles from `u.item` or RecBole's `ml-100k.item`), MovieLens
1M/10M (`ratings.dat`, titles from `movies.dat`), MovieLens 20M/25M/latest (`ratings.csv`, titles
from `movies.csv`), RecBole atomic files (`.inter`, titles from the `.item` beside it) and any
CSV / TSV / Parquet table whose user, item, rating and timestamp columns are named by the user.
Ids stay the user's own (kept as strings); pyarrow reads large files fast when installed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from contrastkit.errors import UserError, check_choice, install_hint

FORMATS = ("auto", "ml-100k", "movielens-dat", "movielens-csv", "recbole", "csv", "tsv", "parquet")


@dataclass
class RawInteractions:
    """Interactions as integer codes into the user / item id vocabularies (ids as strings)."""

    users: np.ndarray  # (E,) int64 codes into user_ids
    items: np.ndarray  # (E,) int64 codes into item_ids
    user_ids: np.ndarray  # (U,) str
    item_ids: np.ndarray  # (I,) str
    ratings: np.ndarray | None = None  # (E,) float64
    timestamps: np.ndarray | None = None  # (E,) float64
    item_titles: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def select(self, keep: np.ndarray) -> RawInteractions:
        """The rows where `keep` (bool mask or index array) holds; vocabularies unchanged."""
        return RawInteractions(
            users=self.users[keep],
            items=self.items[keep],
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            ratings=None if self.ratings is None else self.ratings[keep],
            timestamps=None if self.timestamps is None else self.timestamps[keep],
            item_titles=self.item_titles,
            source=self.source,
        )


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes (E,) int64 and the sorted vocabulary as strings (natural order for numeric ids)."""
    uniq, codes = np.unique(values, return_inverse=True)
    if uniq.dtype.kind == "f" and np.all(np.mod(uniq, 1) == 0):
        uniq = uniq.astype(np.int64)
    vocab = np.asarray([str(v) for v in uniq.tolist()], dtype=object)
    return codes.astype(np.int64).reshape(-1), vocab


def _has_pyarrow() -> bool:
    try:
        import pyarrow.csv  # noqa: F401
    except ImportError:
        return False
    return True


def _read_table(
    source: Path | bytes,
    *,
    sep: str,
    names: list[str] | None,
    columns: list[str],
    what: str,
) -> dict[str, np.ndarray]:
    """Selected columns of a delimited text table (header row unless `names` are given)."""
    if _has_pyarrow():
        import pyarrow.csv as pacsv

        read_opts = pacsv.ReadOptions(column_names=names, block_size=1 << 24)
        parse_opts = pacsv.ParseOptions(delimiter=sep)
        stream = io.BytesIO(source) if isinstance(source, bytes) else str(source)
        try:
            table = pacsv.read_csv(stream, read_options=read_opts, parse_options=parse_opts)
        except Exception as exc:  # pyarrow raises its own error types on malformed files
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"cannot read {what}: {first}") from None
        available = list(table.column_names)
        _check_columns(columns, available, what)
        return {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}
    text = source.decode("utf-8", errors="replace") if isinstance(source, bytes) else Path(
        source
    ).read_text(encoding="utf-8", errors="replace")
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    rows = [r for r in reader if r]
    if names is None:
        if not rows:
            raise UserError(f"{what} is empty")
        names, rows = rows[0], rows[1:]
    _check_columns(columns, names, what)
    out: dict[str, np.ndarray] = {}
    for c in columns:
        j = names.index(c)
        raw = [r[j] if j < len(r) else "" for r in rows]
        try:
            out[c] = np.asarray([float(v) for v in raw])
        except ValueError:
            out[c] = np.asarray(raw, dtype=object)
    return out


def _check_columns(wanted: list[str], available: list[str], what: str) -> None:
    from contrastkit.errors import closest

    for c in wanted:
        if c not in available:
            raise UserError(
                f"column {c!r} not found in {what}{closest(c, available)}; columns there: "
                f"{', '.join(available)} (set recsys.user_column / item_column / rating_column / "
                "time_column)"
            )


def _numeric(name: str, values: np.ndarray, what: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"column {name!r} of {what} must be numeric") from None


def _assemble(
    cols: dict[str, np.ndarray],
    user: str,
    item: str,
    rating: str | None,
    time: str | None,
    what: str,
) -> RawInteractions:
    users, user_ids = _factorize(np.asarray(cols[user]))
    items, item_ids = _factorize(np.asarray(cols[item]))
    return RawInteractions(
        users=users,
        items=items,
        user_ids=user_ids,
        item_ids=item_ids,
        ratings=None if rating is None else _numeric(rating, cols[rating], what),
        timestamps=None if time is None else _numeric(time, cols[time], what),
        source=what,
    )


# ----------------------------------------------------------------------------- titles


def _split_titles(text: str, sep: str) -> dict[str, str]:
    """id → title from lines `id<sep>title<sep>...` (lines with fewer fields are skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(sep)
        if len(parts) >= 2:
            out[parts[0]] = parts[1]
    return out


def _titles_pipe(path: Path) -> dict[str, str]:
    """GroupLens `u.item`: id|title|release date|...  (latin-1)."""
    return _split_titles(path.read_text(encoding="latin-1"), "|")


def _titles_dat(path: Path) -> dict[str, str]:
    """GroupLens `movies.dat`: id::title::genres (latin-1 in 1M, UTF-8 in 10M)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return _split_titles(text, "::")


def _titles_csv(path: Path) -> dict[str, str]:
    """GroupLens `movies.csv`: movieId,title,genres with a header (quoted CSV)."""
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.DictReader(handle)
        return {row["movieId"]: row["title"] for row in reader if row.get("movieId")}


def _titles_recbole(path: Path, item_column: str) -> dict[str, str]:
    """RecBole `.item` file: the first column named like *title*, plus release_year if present."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines:
        return {}
    header = [h.split(":")[0] for h in lines[0].split("\t")]
    if item_column not in header:
        return {}
    title_cols = [i for i, h in enumerate(header) if "title" in h]
    if not title_cols:
        return {}
    ti, ii = title_cols[0], header.index(item_column)
    yi = header.index("release_year") if "release_year" in header else None
    out: dict[str, str] = {}
    for line in lines[1:]:
        parts = line.split("\t")
        if len(parts) <= max(ti, ii):
            continue
        title = parts[ti]
        if yi is not None and yi < len(parts) and parts[yi]:
            title = f"{title} ({parts[yi]})"
        out[parts[ii]] = title
    return out


# ----------------------------------------------------------------------------- readers


_GROUPLENS_COLUMNS = ("user_id", "item_id", "rating", "timestamp")  # files without a header
_TitleReader = Callable[[Path], dict[str, str]]


def _read_movielens(
    path: str | Path,
    data_name: str,
    kind: str,
    titles: Sequence[tuple[str, _TitleReader]],
    *,
    sep: str = "\t",
    field_sep: bytes | None = None,
    header: Sequence[str] | None = None,
) -> RawInteractions:
    """A GroupLens ratings file (user, item, rating, timestamp), or the folder holding `data_name`.

    `field_sep`: a multi-byte field separator rewritten to `sep` before parsing; `header`: the
    four columns' names in the file's header row (None: no header row); `titles`: the title
    files tried in order in the data file's folder (the first one present is read).
    """
    path = Path(path)
    folder, data_file = (path, path / data_name) if path.is_dir() else (path.parent, path)
    if not data_file.is_file():
        raise UserError(f"{kind} file {str(data_file)!r} does not exist")
    source: Path | bytes = data_file
    if field_sep is not None:
        source = data_file.read_bytes().replace(field_sep, sep.encode())
    names = None if header is not None else list(_GROUPLENS_COLUMNS)
    columns = list(header or _GROUPLENS_COLUMNS)
    user, item, rating, time = columns
    cols = _read_table(source, sep=sep, names=names, columns=columns, what=str(data_file))
    raw = _assemble(cols, user, item, rating, time, str(data_file))
    for name, read_titles in titles:
        if (folder / name).is_file():
            raw.item_titles = read_titles(folder / name)
            break
    return raw


def read_ml100k(path: str | Path) -> RawInteractions:
    """MovieLens 100K: `u.data` (user, item, rating, timestamp; tab-separated, no header)."""
    recbole_titles = partial(_titles_recbole, item_column="item_id")
    titles: list[tuple[str, _TitleReader]] = [
        ("u.item", _titles_pipe),
        ("ml-100k.item", recbole_titles),
    ]
    return _read_movielens(path, "u.data", "MovieLens 100K", titles)


def read_movielens_dat(path: str | Path) -> RawInteractions:
    """MovieLens 1M / 10M: `ratings.dat` as user::item::rating::timestamp (titles: movies.dat)."""
    titles = [("movies.dat", _titles_dat)]
    return _read_movielens(path, "ratings.dat", "MovieLens ratings", titles, field_sep=b"::")


def read_movielens_csv(path: str | Path) -> RawInteractions:
    """MovieLens 20M / 25M / latest: `ratings.csv` (userId,movieId,rating,timestamp; movies.csv)."""
    header = ("userId", "movieId", "rating", "timestamp")
    titles = [("movies.csv", _titles_csv)]
    return _read_movielens(path, "ratings.csv", "MovieLens ratings", titles, sep=",", header=header)


def read_recbole(
    path: str | Path,
    *,
    user_column: str = "user_id",
    item_column: str = "item_id",
    rating_column: str | None = "rating",
    time_column: str | None = "timestamp",
) -> RawInteractions:
    """RecBole atomic file `.inter`: tab-separated, `name:type` header (Zhao et al. 2021)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.inter"))
        if len(found) != 1:
            raise UserError(
                f"expected exactly one .inter file in {str(path)!r}, found {len(found)}; "
                "give the file itself as recsys.data"
            )
        path = found[0]
    if not path.is_file():
        raise UserError(f"RecBole file {str(path)!r} does not exist")
    head, _, body = path.read_bytes().partition(b"\n")
    header_line = head.decode("utf-8", errors="replace").rstrip("\r")
    names = [h.split(":")[0] for h in header_line.split("\t")]
    rating_column = rating_column if rating_column in names else None
    time_column = time_column if time_column in names else None
    wanted = [c for c in (user_column, item_column, rating_column, time_column) if c]
    _check_columns(wanted, names, str(path))
    cols = _read_table(body, sep="\t", names=names, columns=wanted, what=str(path))
    raw = _assemble(cols, user_column, item_column, rating_column, time_column, str(path))
    item_file = path.with_suffix(".item")
    if item_file.is_file():
        raw.item_titles = _titles_recbole(item_file, item_column)
    return raw


def read_table(
    path: str | Path,
    *,
    user_column: str,
    item_column: str,
    rating_column: str | None = None,
    time_column: str | None = None,
    separator: str | None = None,
    title_file: str | Path | None = None,
) -> RawInteractions:
    """Any CSV / TSV (header row) or Parquet file, with the user's column names."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"interactions file {str(path)!r} does not exist")
    wanted = [c for c in (user_column, item_column, rating_column, time_column) if c]
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError(
                f"reading Parquet needs pyarrow: {install_hint('recsys')}"
            ) from None
        schema_names = list(pq.read_schema(path).names)
        _check_columns(wanted, schema_names, str(path))
        table = pq.read_table(path, columns=wanted)
        cols = {c: table.column(c).to_numpy(zero_copy_only=False) for c in wanted}
    else:
        sep = separator or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
        source: Path | bytes = path
        if len(sep) > 1:
            source = path.read_bytes().replace(sep.encode(), b"\t")
            sep = "\t"
        cols = _read_table(source, sep=sep, names=None, columns=wanted, what=str(path))
    raw = _assemble(cols, user_column, item_column, rating_column, time_column, str(path))
    if title_file is not None:
        raw.item_titles = _titles_recbole(Path(title_file), item_column)
    return raw


def detect_format(path: Path) -> str:
    """The reader for a file or folder, from its name (`auto` format)."""
    if path.is_dir():
        for name, fmt in (("u.data", "ml-100k"), ("ratings.dat", "movielens-dat"), ("ratings.csv", "movielens-csv")):
            if (path / name).is_file():
                return fmt
        if any(path.glob("*.inter")):
            return "recbole"
        raise UserError(
            f"cannot tell the format of folder {str(path)!r}: expected u.data, ratings.dat, "
            "ratings.csv or a RecBole .inter file in it; or give the file and recsys.format"
        )
    name, suffix = path.name.lower(), path.suffix.lower()
    if name == "u.data":
        return "ml-100k"
    if suffix == ".dat":
        return "movielens-dat"
    if suffix == ".inter":
        return "recbole"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if suffix == ".csv":
        with path.open(encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
        return "movielens-csv" if first.startswith("userId,movieId") else "csv"
    raise UserError(
        f"cannot tell the format of {str(path)!r} from its name; set recsys.format to one of "
        f"{', '.join(FORMATS[1:])}"
    )


def read_interactions(
    path: str | Path,
    *,
    format: str = "auto",
    user_column: str = "user_id",
    item_column: str = "item_id",
    rating_column: str | None = "rating",
    time_column: str | None = "timestamp",
    separator: str | None = None,
) -> RawInteractions:
    """Read interactions from a file or folder in any supported format."""
    check_choice("recsys.format", format, FORMATS)
    path = Path(path)
    if not path.exists():
        raise UserError(f"interactions path {str(path)!r} does not exist")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "ml-100k":
        return read_ml100k(path)
    if fmt == "movielens-dat":
        return read_movielens_dat(path)
    if fmt == "movielens-csv":
        return read_movielens_csv(path)
    if fmt == "recbole":
        return read_recbole(
            path,
            user_column=user_column,
            item_column=item_column,
            rating_column=rating_column,
            time_column=time_column,
        )
    if path.is_dir():
        raise UserError(f"recsys.format {fmt!r} needs a file, got folder {str(path)!r}")
    sep = separator or ("\t" if fmt == "tsv" else "," if fmt == "csv" else None)
    return read_table(
        path,
        user_column=user_column,
        item_column=item_column,
        rating_column=rating_column,
        time_column=time_column,
        separator=sep,
    )
