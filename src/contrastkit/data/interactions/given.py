"""A published train / validation / test split read from its own files (``recsys.split: given``).

Layouts (``recsys.given_format``):

- ``pairs``: one interaction per line, ``user item [rating [timestamp]]``, space or tab separated
  (SELFRec's ``train.txt`` / ``valid.txt`` / ``test.txt``);
- ``lists``: one user per line, ``user item item ...`` (LightGCN's ``train.txt`` / ``test.txt``);
- ``csv`` / ``tsv`` / ``parquet`` / ``recbole``: the table readers, with ``recsys.user_column`` etc.;
- ``auto``: by the train file's name (.csv, .tsv, .parquet, .inter), else a whitespace text file:
  ``lists`` if a line of any of the files has more than 3 fields, else ``pairs`` (a ``lists``
  file whose users all have 1 or 2 items reads as pairs: name the format then).

One user and one item vocabulary, built from the train file (after the rating threshold and
de-duplication) and ordered naturally (numeric ids by value), maps every file by the raw id
strings. Valid / test interactions of users or items absent from train cannot be scored by an
embedding model: they are dropped, counted in the data stats and reported in one warning line;
so are valid / test pairs already in train (or test pairs in valid), which full ranking masks.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from contrastkit.data.interactions.dataset import InteractionData
from contrastkit.data.interactions.preprocess import clean, natural_key
from contrastkit.data.interactions.readers import RawInteractions, read_interactions
from contrastkit.data.interactions.splits import split_interactions
from contrastkit.errors import UserError, check_choice

GIVEN_FORMATS = ("auto", "pairs", "lists", "csv", "tsv", "parquet", "recbole")
_TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet", ".inter": "recbole"}
_PAIR_FIELDS = ("user", "item", "rating", "timestamp")


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, whitespace-separated fields) of the non-blank lines of a text file."""
    if not path.is_file():
        raise UserError(f"given split file {str(path)!r} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return [(n, f) for n, f in enumerate((line.split() for line in text.splitlines()), start=1) if f]


def _raw(users: list[str], items: list[str], source: str, **columns: np.ndarray | None) -> RawInteractions:
    u_vocab, u_codes = np.unique(np.asarray(users, dtype=str), return_inverse=True)
    i_vocab, i_codes = np.unique(np.asarray(items, dtype=str), return_inverse=True)
    return RawInteractions(
        users=u_codes.astype(np.int64).reshape(-1),
        items=i_codes.astype(np.int64).reshape(-1),
        user_ids=np.asarray(u_vocab.tolist(), dtype=object),
        item_ids=np.asarray(i_vocab.tolist(), dtype=object),
        ratings=columns.get("ratings"),
        timestamps=columns.get("timestamps"),
        source=source,
    )


def read_pairs(path: Path) -> RawInteractions:
    """``user item [rating [timestamp]]`` lines; every line has as many fields as the first."""
    lines = _lines(path)
    width = len(lines[0][1]) if lines else 2
    if not 2 <= width <= 4:
        raise UserError(
            f"{path}:{lines[0][0]}: expected 2 to 4 fields (user item [rating [timestamp]]), got {width}"
        )
    users, items, numbers = [], [], []
    for n, fields in lines:
        if len(fields) != width:
            raise UserError(
                f"{path}:{n}: expected {width} fields ({' '.join(_PAIR_FIELDS[:width])}) like line "
                f"{lines[0][0]}, got {len(fields)}"
            )
        users.append(fields[0])
        items.append(fields[1])
        if width > 2:
            try:
                numbers.append([float(v) for v in fields[2:]])
            except ValueError:
                raise UserError(f"{path}:{n}: rating / timestamp must be numbers, got {' '.join(fields[2:])!r}") from None
    table = np.asarray(numbers, dtype=np.float64).reshape(len(numbers), width - 2)
    return _raw(
        users, items, str(path),
        ratings=table[:, 0] if width >= 3 else None,
        timestamps=table[:, 1] if width == 4 else None,
    )


def read_lists(path: Path) -> RawInteractions:
    """``user item item ...`` lines (a user alone on a line has no interactions there)."""
    users, items = [], []
    for _n, fields in _lines(path):
        users += [fields[0]] * (len(fields) - 1)
        items += fields[1:]
    return _raw(users, items, str(path))


def detect_given_format(paths: list[Path]) -> str:
    """``auto``: a table format by the first file's suffix, else ``lists`` or ``pairs``."""
    fmt = _TABLE_SUFFIXES.get(paths[0].suffix.lower())
    if fmt:
        return fmt
    for path in paths:
        for _n, fields in _lines(path):
            if len(fields) > 3:
                return "lists"
    return "pairs"


def read_given_file(path: Path, fmt: str, **table: Any) -> RawInteractions:
    """One file of a given split in layout `fmt` (not ``auto``); `table`: the column options."""
    if not path.is_file():
        raise UserError(f"given split file {str(path)!r} does not exist")
    if fmt == "pairs":
        return read_pairs(path)
    if fmt == "lists":
        return read_lists(path)
    return read_interactions(path, format=fmt, **table)


# ----------------------------------------------------------------------------- building


def _global_codes(raw: RawInteractions, index: dict[str, int], which: str) -> np.ndarray:
    """Codes of `raw`'s users or items in the shared vocabulary (-1: not in it)."""
    vocab = raw.user_ids if which == "user" else raw.item_ids
    local = raw.users if which == "user" else raw.items
    mapped = np.asarray([index.get(str(v), -1) for v in vocab.tolist()], dtype=np.int64)
    return mapped[local] if local.size else np.zeros(0, dtype=np.int64)


def _ids(raw: RawInteractions, which: str) -> np.ndarray:
    vocab, local = (raw.user_ids, raw.users) if which == "user" else (raw.item_ids, raw.items)
    return np.unique(np.asarray(vocab, dtype=object)[np.unique(local)].astype(str))


def _keys(pairs: np.ndarray, n_items: int) -> np.ndarray:
    return pairs[:, 0] * n_items + pairs[:, 1]


def build_given_data(
    train: RawInteractions,
    valid: RawInteractions | None,
    test: RawInteractions,
    *,
    rating_threshold: float | None,
    max_users: int | None = None,
    split_ratios: list[float] | tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> InteractionData:
    """Threshold and de-duplicate each file, map all three through train's vocabulary, drop (and
    report) what train cannot score. Without `valid`, each user's train interactions are split
    at random in the proportion split_ratios[0] : split_ratios[1] (the test share is unused)."""
    stats: dict[str, Any] = {}
    raws = [r for r in (train, valid, test) if r is not None]
    stats["users_in_files"] = int(np.unique(np.concatenate([_ids(r, "user") for r in raws])).size)
    stats["items_in_files"] = int(np.unique(np.concatenate([_ids(r, "item") for r in raws])).size)
    cleaned: dict[str, RawInteractions] = {}
    for name, raw in (("train", train), ("valid", valid), ("test", test)):
        if raw is None:
            continue
        cleaned[name], st = clean(raw, rating_threshold=rating_threshold)
        stats[f"{name}_rows_read"] = st["rows_read"]
        stats[f"{name}_duplicates_dropped"] = st["duplicates_dropped"]
    tr = cleaned["train"]
    user_vocab = sorted(_ids(tr, "user").tolist(), key=natural_key)
    if max_users is not None:
        user_vocab = user_vocab[:max_users]
    user_index = {u: i for i, u in enumerate(user_vocab)}
    tr_users = _global_codes(tr, user_index, "user")
    tr = tr.select(tr_users >= 0)
    item_vocab = sorted(_ids(tr, "item").tolist(), key=natural_key)
    item_index = {v: i for i, v in enumerate(item_vocab)}
    n_users, n_items = len(user_vocab), len(item_vocab)

    def to_pairs(raw: RawInteractions) -> tuple[np.ndarray, np.ndarray]:
        """(pairs of known user and item, keep mask over raw rows): also drops max_users' cut."""
        u, i = _global_codes(raw, user_index, "user"), _global_codes(raw, item_index, "item")
        return np.stack([u, i], axis=1), (u >= 0) & (i >= 0)

    train_pairs, _ = to_pairs(tr)
    parts: dict[str, np.ndarray] = {}
    report: list[str] = []
    masked = train_pairs
    for name in ("valid", "test"):
        if name not in cleaned:
            continue
        raw = cleaned[name]
        if max_users is not None:  # users cut by max_users are not "unseen": leave them out quietly
            raw = raw.select(np.isin(raw.user_ids[raw.users].astype(str), np.asarray(user_vocab, dtype=str)))
        pairs, known = to_pairs(raw)
        unseen_users = int(np.unique(raw.users[pairs[:, 0] < 0]).size)
        unseen_items = int(np.unique(raw.items[pairs[:, 1] < 0]).size)
        pairs = pairs[known]
        repeated = np.isin(_keys(pairs, n_items), _keys(masked, n_items))
        parts[name] = pairs[~repeated]
        masked = np.concatenate([masked, parts[name]])
        dropped = int((~known).sum())
        stats.update({
            f"{name}_unseen_users": unseen_users,
            f"{name}_unseen_items": unseen_items,
            f"{name}_dropped_unseen": dropped,
            f"{name}_dropped_seen_before": int(repeated.sum()),
        })
        if dropped or repeated.any():
            before = "train" if name == "valid" else "train or valid"
            report.append(
                f"{name}: {dropped} interactions of {unseen_users} users / {unseen_items} items not in "
                f"train, {int(repeated.sum())} pairs already in {before}"
            )
    train_time = tr.timestamps
    if "valid" not in parts:
        a, b = float(split_ratios[0]), float(split_ratios[1])
        if b <= 0:
            raise UserError(
                "split=given without recsys.valid_file carves validation from train: "
                "recsys.split_ratios needs a valid share > 0"
            )
        shares = (a / (a + b), b / (a + b), 0.0)
        carve = split_interactions(train_pairs[:, 0], None, kind="random", ratios=shares, seed=seed)
        parts["valid"] = train_pairs[carve.valid]
        train_pairs = train_pairs[carve.train]
        train_time = None if train_time is None else train_time[carve.train]
        stats["valid_carved_from_train"] = int(parts["valid"].shape[0])
    if report:
        warnings.warn(
            "given split: dropped (an embedding model cannot score them) " + "; ".join(report), stacklevel=2
        )
    for name, pairs in (("valid", parts["valid"]), ("test", parts["test"])):
        if pairs.shape[0] == 0:
            raise UserError(f"given split: no {name} interactions left of users and items in train")
    titles = tr.item_titles
    data = InteractionData(
        n_users=n_users,
        n_items=n_items,
        train=train_pairs,
        valid=parts["valid"],
        test=parts["test"],
        user_ids=list(user_vocab),
        item_ids=list(item_vocab),
        item_titles=[titles.get(i, "") for i in item_vocab] if titles else None,
        train_time=None if train_time is None else np.asarray(train_time),
    )
    stats.update(
        users=n_users,
        items=n_items,
        train=int(data.train.shape[0]),
        valid=int(data.valid.shape[0]),
        test=int(data.test.shape[0]),
        density=float(data.train.shape[0] + data.valid.shape[0] + data.test.shape[0]) / max(n_users * n_items, 1),
    )
    data.stats = stats
    return data


def load_given(
    train_file: Path,
    valid_file: Path | None,
    test_file: Path,
    *,
    format: str = "auto",
    rating_threshold: float | None,
    max_users: int | None = None,
    split_ratios: list[float] | tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    **table: Any,
) -> InteractionData:
    """Read the given split's files (`table`: read_interactions' column options) and build it."""
    check_choice("recsys.given_format", format, GIVEN_FORMATS)
    files = [train_file] + ([valid_file] if valid_file is not None else []) + [test_file]
    for path in files:
        if not path.is_file():
            raise UserError(f"given split file {str(path)!r} does not exist")
    fmt = detect_given_format(files) if format == "auto" else format
    tr = read_given_file(train_file, fmt, **table)
    va = None if valid_file is None else read_given_file(valid_file, fmt, **table)
    te = read_given_file(test_file, fmt, **table)
    data = build_given_data(
        tr, va, te, rating_threshold=rating_threshold, max_users=max_users, split_ratios=split_ratios, seed=seed
    )
    data.stats["given_format"] = fmt
    return data
