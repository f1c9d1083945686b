"""Figures of the report, drawn in memory with matplotlib's object API (Agg canvas, no pyplot)
and inlined as base64 PNG data URIs: training / validation curves from a run's log CSVs, and
one loss curve per run for comparisons."""

from __future__ import annotations

import base64
import csv
import io
import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Series = tuple[list[float], list[float]]
_NOT_PLOTTED = {"epoch", "elapsed_sec", "seconds"}  # bookkeeping columns of the log CSVs
MAX_PANELS = 15


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def read_columns(path: Path) -> dict[str, list[float | None]]:
    """The columns of a log CSV as numbers (None where a cell is empty or not a finite number;
    a half-written last row of an interrupted run reads as such)."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns: dict[str, list[float | None]] = {}
    for row in rows:
        for key, text in row.items():
            if key is None:
                continue
            try:
                value: float | None = float(text) if text not in (None, "") else None
            except ValueError:
                value = None
            columns.setdefault(key, []).append(value if value is not None and math.isfinite(value) else None)
    return columns


def series(columns: dict[str, list[float | None]], x_key: str, y_key: str) -> Series:
    """(x, y) pairs of two columns where both are numbers."""
    pairs = [(x, y) for x, y in zip(columns[x_key], columns[y_key], strict=False) if x is not None and y is not None]
    return [x for x, _ in pairs], [y for _, y in pairs]


def curves(columns: dict[str, list[float | None]], title: str) -> bytes | None:
    """One panel per logged quantity against the step (or the first column); columns that share
    a name before '@' (recall@5, recall@10, ...) share a panel; panels whose every value is the
    same (a user count), other than loss and lr, are left out. None when there is nothing to draw."""
    if not columns:
        return None
    x_key = "step" if "step" in columns else next(iter(columns))
    panels: dict[str, list[str]] = {}
    for key in columns:
        if key not in (x_key, "step") and key not in _NOT_PLOTTED and series(columns, x_key, key)[1]:
            panels.setdefault(key.split("@")[0], []).append(key)
    names = [name for name, keys in panels.items()
             if name in ("loss", "lr") or len({y for k in keys for y in series(columns, x_key, k)[1]}) > 1]
    names = names[:MAX_PANELS]
    if not names:
        return None
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = Figure(figsize=(4.3 * ncols, 2.9 * nrows + 0.4), dpi=90)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for key in panels[name]:
            xs, ys = series(columns, x_key, key)
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None, linewidth=1.2, label=key)
        if len(panels[name]) > 1:
            ax.legend(fontsize=7)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(x_key, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _png(fig)


def overlay(lines: dict[str, Series], ylabel: str) -> bytes | None:
    """One line per run (e.g. the training loss of each), on shared axes."""
    lines = {label: xy for label, xy in lines.items() if xy[0]}
    if not lines:
        return None
    fig = Figure(figsize=(8, 3.8), dpi=90)
    ax = fig.subplots()
    for label, (xs, ys) in lines.items():
        ax.plot(xs, ys, marker="." if len(xs) < 30 else None, linewidth=1.2, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)
