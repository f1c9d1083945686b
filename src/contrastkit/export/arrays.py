"""`--format arrays`: the embeddings `contrastkit embed` computes, with their ids (and labels
where known), as one .npz (arrays ``embeddings``, ``ids``, ``labels``, …) or one Parquet table
(columns ``id``, ``label``, …, ``embedding`` as a fixed-size list of float32), by --out's suffix.

The vectors are `embed`'s own: it runs into a temporary folder and its files are read back, so
the two commands agree to the bit. Ids: the row of the data set for images and texts (texts also
in ``text``), the user / item ids of a recommendation run (``kind`` tells users from items when
both are exported), the tokens of a word2vec run (with their ``count``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from contrastkit.errors import UserError, install_hint
from contrastkit.tasks import EmbedsItems, TrainedRun

SUFFIXES: tuple[str, ...] = (".npz", ".parquet")
NPZ_NAMES = {"id": "ids", "label": "labels", "kind": "kinds", "text": "texts", "count": "counts"}


def export_arrays(run: TrainedRun, spec: str | None, out: Path) -> list[str]:
    """Write ``out`` (.npz or .parquet) from `embed` of ``spec`` (None: the task's default)."""
    if out.suffix not in SUFFIXES:
        raise UserError(f"--out {str(out)!r}: arrays go into a .npz or a .parquet file; name it *.npz or *.parquet")
    if out.suffix == ".parquet":
        _pyarrow()  # before the embedding work
    embeddings, columns = embed_table(run, spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    n, d = embeddings.shape
    if out.suffix == ".npz":
        arrays: dict[str, Any] = {"embeddings": embeddings, **{NPZ_NAMES[k]: v for k, v in columns.items()}}
        np.savez(out, **arrays)
        what = ", ".join(["embeddings", *(NPZ_NAMES[k] for k in columns)])
        load = [f"    z = numpy.load({str(out)!r}); embeddings, ids = z['embeddings'], z['ids']"]
    else:
        _write_parquet(out, embeddings, columns)
        what = ", ".join([*columns, f"embedding (fixed-size list of {d} float32)"])
        load = [
            f"    table = pyarrow.parquet.read_table({str(out)!r})",
            f"    embeddings = table['embedding'].combine_chunks().flatten().to_numpy().reshape(-1, {d})",
        ]
    return [f"wrote {out}: {n} × {d} embeddings (as contrastkit embed) with {what}", "load it with:", *load]


def embed_table(run: TrainedRun, spec: str | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """`contrastkit embed RUN --data SPEC` read back: the (N, D) float32 embeddings and their
    columns (``id`` always; ``label``, ``text``, ``kind``, ``count`` where embed writes them)."""
    # runs that embed items (images, texts) write a .npy plus side files; recommendation and
    # word-vector runs write their default sets (users + items, tokens) into one .npz
    one_npz = not isinstance(run, EmbedsItems) and spec in (None, "all", "tokens")
    with tempfile.TemporaryDirectory(prefix="contrastkit-export-") as tmp:
        path = Path(tmp) / ("embed.npz" if one_npz else "embed.npy")
        run.embed(spec, path)
        return _read_npz(path) if one_npz else _read_npy(path)


def _read_npz(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    with np.load(path) as z:
        if "vectors" in z:  # word2vec: one row per token
            return z["vectors"].astype(np.float32), {"id": z["tokens"], "count": z["counts"]}
        users, items = z["user_embeddings"], z["item_embeddings"]
        kinds = np.asarray(["user"] * users.shape[0] + ["item"] * items.shape[0])
        ids = np.concatenate([z["user_ids"].astype(str), z["item_ids"].astype(str)])
        return np.concatenate([users, items]).astype(np.float32), {"id": ids, "kind": kinds}


def _read_npy(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    embeddings = np.load(path).astype(np.float32)
    n = embeddings.shape[0]
    columns: dict[str, np.ndarray] = {"id": np.arange(n)}
    ids, labels, texts = (path.with_name(path.stem + s) for s in (".ids.txt", ".labels.npy", ".texts.txt"))
    if ids.is_file():
        columns["id"] = np.asarray(_lines(ids, n))
    if labels.is_file():
        columns["label"] = np.load(labels)
    if texts.is_file() and len(lines := _lines(texts, n)) == n:
        columns["text"] = np.asarray(lines)
    return embeddings, columns


def _lines(path: Path, n: int) -> list[str]:
    """The first n lines of a side file embed wrote ('\\n'-separated, one per row)."""
    return path.read_text(encoding="utf-8").split("\n")[:n]


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise UserError(f"Parquet output needs the optional package pyarrow: {install_hint('export')}") from None
    return pyarrow


def _write_parquet(out: Path, embeddings: np.ndarray, columns: dict[str, np.ndarray]) -> None:
    pa = _pyarrow()
    n, d = embeddings.shape
    flat = pa.array(np.ascontiguousarray(embeddings, dtype=np.float32).reshape(n * d), type=pa.float32())
    fields = {name: pa.array(values.tolist()) for name, values in columns.items()}
    fields["embedding"] = pa.FixedSizeListArray.from_arrays(flat, d)
    pa.parquet.write_table(pa.table(fields), str(out))
