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


# ----------------------------------------------------------------------------- an image run's evaluation

PROBES = (("knn", "kNN"), ("linear_probe", "linear"), ("linear_sgd", "linear SGD"))
ENCODER_COLOURS = {"ssl": "tab:blue", "init_from": "tab:green", "random_init": "tab:gray", "raw_pixels": "tab:orange"}
MAX_ANNOTATED = 20  # classes up to which a confusion matrix's cells carry their counts
MAX_TICKS = 40  # classes up to which its axes name every class


def _bars(encoders: dict[str, dict[str, object]]) -> tuple[list[str], dict[str, list[tuple[float, float] | None]]]:
    """The probes that some encoder has (kNN, linear, linear SGD, few-label k/class, episodes) and,
    per encoder, its accuracy and spread (few-label: std over draws; episodes: 95% interval)."""
    groups: dict[str, dict[str, tuple[float, float]]] = {}
    for name, result in encoders.items():
        for key, label in PROBES:
            entry = result.get(key)
            if isinstance(entry, dict) and isinstance(entry.get("accuracy"), int | float):
                groups.setdefault(label, {})[name] = (float(entry["accuracy"]), 0.0)
        few = result.get("few_label")
        shots = few.get("shots", {}) if isinstance(few, dict) else {}
        for k, entry in shots.items():
            if isinstance(entry, dict) and entry.get("mean") is not None:
                groups.setdefault(f"{k}/class", {})[name] = (float(entry["mean"]), float(entry.get("std") or 0.0))
        episodes = result.get("episodes")
        for key, entry in (episodes or {}).items() if isinstance(episodes, dict) else []:
            if isinstance(entry, dict) and entry.get("mean") is not None:
                groups.setdefault(key.replace("way", "-way ").replace("shot", "-shot"), {})[name] = (
                    float(entry["mean"]), float(entry.get("ci95") or 0.0))
    labels = list(groups)
    return labels, {name: [groups[g].get(name) for g in labels] for name in encoders}


def accuracy_bars(encoders: dict[str, dict[str, object]]) -> bytes | None:
    """Test accuracy (%) of every probe, one bar per encoder (trained, random init, raw pixels)
    side by side; error bars: the spread over few-label draws / the episodes' 95% interval."""
    labels, values = _bars(encoders)
    if not labels:
        return None
    names = list(values)
    width = 0.8 / len(names)
    fig = Figure(figsize=(max(6.0, 1.3 * len(labels) + 2.5), 3.8), dpi=90)
    ax = fig.subplots()
    for i, name in enumerate(names):
        xs = [g + (i - (len(names) - 1) / 2) * width for g in range(len(labels))]
        pairs = [(x, v) for x, v in zip(xs, values[name], strict=True) if v is not None]
        if not pairs:
            continue
        bars = ax.bar([x for x, _ in pairs], [100 * v[0] for _, v in pairs], width,
                      yerr=[100 * v[1] for _, v in pairs], capsize=2, label=name,
                      color=ENCODER_COLOURS.get(name, f"C{i}"))
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax.set_xticks(range(len(labels)), labels, fontsize=9)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 110)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=len(names), loc="upper left")
    ax.set_title("accuracy against the baselines", fontsize=11)
    fig.tight_layout()
    return _png(fig)


def confusion_heatmaps(matrices: dict[str, list[list[int]]], class_names: list[str] | None, title: str) -> bytes | None:
    """Confusion matrices (rows: true class, columns: predicted) as heat maps side by side, one
    per probe: colour = share of the true class's images, counts written in the cells (up to 20
    classes), classes named on the axes (up to 40)."""
    import numpy as np

    matrices = {k: m for k, m in matrices.items() if m and all(isinstance(r, list) for r in m)}
    if not matrices:
        return None
    n = len(next(iter(matrices.values())))
    names = class_names if class_names and len(class_names) == n else [str(i) for i in range(n)]
    side = min(7.0, max(3.2, 0.34 * n + 1.4))
    fig = Figure(figsize=(side * len(matrices) + 0.6, side + 1.2), dpi=90)
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    for ax, (probe, matrix) in zip(axes, matrices.items(), strict=True):
        counts = np.asarray(matrix, dtype=float)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
        ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        if n <= MAX_ANNOTATED:
            for i in range(n):
                for j in range(n):
                    if counts[i, j]:
                        ax.text(j, i, f"{counts[i, j]:.0f}", ha="center", va="center", fontsize=7 if n <= 12 else 5,
                                color="white" if share[i, j] > 0.5 else "black")
        if n <= MAX_TICKS:
            ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=7)
            ax.set_yticks(range(n), names, fontsize=7)
        accuracy = np.trace(counts) / max(counts.sum(), 1.0)
        ax.set_title(f"{probe}: {100 * accuracy:.1f}%", fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def monitor_curve(curve: list[dict[str, float]], title: str, ylabel: str = "accuracy (%)", scale: float = 100) -> bytes | None:
    """A validation figure measured while training (× ``scale``: an accuracy in %), against the step."""
    points = [(p["step"], p["value"]) for p in curve if isinstance(p, dict) and "step" in p and "value" in p]
    if not points:
        return None
    fig = Figure(figsize=(6.5, 3.4), dpi=90)
    ax = fig.subplots()
    ax.plot([s for s, _ in points], [scale * a for _, a in points], marker="o" if len(points) < 40 else None,
            linewidth=1.4, color="tab:green")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)
