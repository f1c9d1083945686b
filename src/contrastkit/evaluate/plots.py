"""Figures for reports: training curves, a t-SNE map of embeddings, a nearest-neighbour grid.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend change);
each function writes a PNG and returns its path.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from contrastkit.errors import UserError
from contrastkit.evaluate.metrics import check_features


def _save(fig: Figure, out_path: str | Path) -> Path:
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png")
    return path


def _read_float(row: dict[str, str | None], key: str) -> float | None:
    value = row.get(key)
    if value is None or value.strip() == "":
        return None
    try:
        out = float(value)
    except ValueError:
        return None
    return out if math.isfinite(out) else None


def plot_training_curves(csv_path: str | Path, out_path: str | Path) -> Path:
    """Loss and learning rate against step, in two panels, from a training-log CSV.

    The CSV needs columns ``step``, ``loss`` and ``lr`` (others are ignored); rows with an empty
    or non-numeric value are skipped for that curve.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise UserError(f"training log {str(csv_path)!r} does not exist")
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        missing = [c for c in ("step", "loss", "lr") if c not in columns]
        if missing:
            raise UserError(
                f"training log {str(csv_path)!r} lacks column(s) {', '.join(missing)}; "
                f"found: {', '.join(columns) or 'none'}"
            )
        rows = list(reader)
    curves: dict[str, tuple[list[float], list[float]]] = {"loss": ([], []), "lr": ([], [])}
    for row in rows:
        step = _read_float(row, "step")
        if step is None:
            continue
        for key, (xs, ys) in curves.items():
            value = _read_float(row, key)
            if value is not None:
                xs.append(step)
                ys.append(value)
    if not curves["loss"][0]:
        raise UserError(f"training log {str(csv_path)!r} has no numeric (step, loss) rows")

    fig = Figure(figsize=(10, 4), dpi=100)
    ax_loss, ax_lr = fig.subplots(1, 2)
    ax_loss.plot(*curves["loss"], color="tab:blue", linewidth=1.2)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss")
    ax_loss.grid(alpha=0.3)
    ax_lr.plot(*curves["lr"], color="tab:orange", linewidth=1.2)
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title("learning rate")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out_path)


def _check_labels_1d(labels: Tensor, n: int, what: str) -> Tensor:
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != n:
        raise UserError(f"{what} must be a 1-D tensor with {n} entries")
    if labels.is_floating_point():
        raise UserError(f"{what} must hold integer class ids, got dtype {labels.dtype}")
    return labels.long().cpu()


def plot_embedding_map(
    features: Tensor,
    labels: Tensor,
    out_path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    max_points: int = 2000,
    seed: int = 0,
) -> Path:
    """2-D t-SNE map of features coloured by class (van der Maaten & Hinton 2008).

    At most ``max_points`` rows (a seeded random subset) are embedded; features with more than
    50 dims are first reduced to 50 by PCA.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    feats = check_features(features, "features").cpu()
    labels = _check_labels_1d(labels, feats.shape[0], "labels")
    if max_points < 5:
        raise UserError(f"max_points must be >= 5, got {max_points!r}")
    n = feats.shape[0]
    if n < 5:
        raise UserError(f"t-SNE needs at least 5 points, got {n}")
    generator = torch.Generator().manual_seed(seed)
    if n > max_points:
        keep = torch.randperm(n, generator=generator)[:max_points].sort().values
        feats, labels = feats[keep], labels[keep]
        n = max_points
    x = feats.double().numpy()
    if x.shape[1] > 50:
        x = PCA(n_components=min(50, n), random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, (n - 1) / 3.0))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    # Small maps gain nothing from OpenMP threads, and spinning threads on a busy machine can
    # make t-SNE of a few hundred points 20x slower; run those on one thread.
    with threadpool_limits(limits=1 if n <= 1000 else None):
        xy = tsne.fit_transform(x)

    classes = sorted(set(labels.tolist()))
    if class_names is not None and max(classes) >= len(class_names):
        raise UserError(
            f"class_names has {len(class_names)} names but labels go up to {max(classes)}"
        )
    cmap_name = "tab10" if len(classes) <= 10 else "tab20"
    fig = Figure(figsize=(7, 6), dpi=100)
    ax = fig.subplots()
    cmap = colormaps[cmap_name]
    lab = labels.numpy()
    for i, c in enumerate(classes):
        mask = lab == c
        name = class_names[c] if class_names is not None else str(c)
        ax.scatter(xy[mask, 0], xy[mask, 1], s=6, color=cmap(i % cmap.N), label=name, alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of {n} embeddings")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2.5, fontsize=8)
    fig.tight_layout()
    return _save(fig, out_path)


def _to_display(image: Tensor) -> tuple[np.ndarray, str | None]:
    """(H, W) array with the gray colormap for 1 channel, else (H, W, 3) uint8."""
    if image.shape[0] == 1:
        return image[0].numpy(), "gray"
    if image.shape[0] == 3:
        return image.permute(1, 2, 0).numpy(), None
    raise UserError(f"images must have 1 or 3 channels, got {image.shape[0]}")


def plot_neighbor_grid(
    images: Tensor,
    features: Tensor,
    out_path: str | Path,
    *,
    num_queries: int = 8,
    k: int = 8,
    seed: int = 0,
    labels: Tensor | None = None,
) -> Path:
    """Rows of (query, its k nearest neighbours by cosine similarity, excluding itself).

    Queries are a seeded random subset. With ``labels``, each neighbour gets a green frame
    when its label matches the query's and a red one otherwise.
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or images.dtype != torch.uint8:
        raise UserError("images must be a uint8 tensor of shape (N, C, H, W)")
    feats = check_features(features, "features").cpu()
    n = images.shape[0]
    if feats.shape[0] != n:
        raise UserError(f"features has {feats.shape[0]} rows but images has {n}")
    if n < 2:
        raise UserError("need at least 2 images to show neighbours")
    if num_queries < 1 or k < 1:
        raise UserError(f"num_queries and k must be >= 1, got {num_queries} and {k}")
    lab = _check_labels_1d(labels, n, "labels") if labels is not None else None
    num_queries = min(num_queries, n)
    k = min(k, n - 1)
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randperm(n, generator=generator)[:num_queries]
    z = F.normalize(feats.float(), dim=1)
    sim = z[queries] @ z.T
    sim[torch.arange(num_queries), queries] = -math.inf
    neighbours = sim.topk(k, dim=1).indices
    images = images.cpu()

    cell = 1.3
    fig = Figure(figsize=(cell * (k + 1), cell * num_queries + 0.4), dpi=100)
    axes = np.asarray(fig.subplots(num_queries, k + 1, squeeze=False))
    for r in range(num_queries):
        row = [int(queries[r]), *neighbours[r].tolist()]
        for col, idx in enumerate(row):
            ax = axes[r, col]
            arr, cmap = _to_display(images[idx])
            ax.imshow(arr, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            colour, width = "black", 0.5
            if col == 0:
                colour, width = "tab:blue", 2.5
            elif lab is not None:
                same = int(lab[idx]) == int(lab[row[0]])
                colour, width = ("tab:green" if same else "tab:red"), 2.5
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(width)
            if r == 0:
                ax.set_title("query" if col == 0 else f"#{col}", fontsize=8)
    fig.suptitle("nearest neighbours (cosine)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_path)
