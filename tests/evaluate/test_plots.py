"""Tests for contrastkit.evaluate.plots: each figure is written as a valid PNG of sane size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from matplotlib.image import imread

from contrastkit.errors import UserError
from contrastkit.evaluate import plot_embedding_map, plot_neighbor_grid, plot_training_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only spins


def _check_png(path: Path, min_w: int, min_h: int) -> None:
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = imread(path)
    h, w = img.shape[:2]
    assert min_w <= w <= 4000 and min_h <= h <= 4000
    assert img[..., :3].std() > 0.01  # something was drawn


def test_training_curves(tmp_path: Path) -> None:
    log = tmp_path / "train_log.csv"
    lines = ["step,epoch,loss,lr,images_per_sec,extra"]
    for step in range(50):
        loss = "" if step == 7 else f"{2.0 / (1 + step):.4f}"
        lines.append(f"{step},{step // 10},{loss},{0.1 * (1 - step / 50):.5f},1000,x")
    log.write_text("\n".join(lines) + "\n")
    out = plot_training_curves(log, tmp_path / "sub" / "curves.png")
    assert out == tmp_path / "sub" / "curves.png"
    _check_png(out, 600, 250)


def test_training_curves_errors(tmp_path: Path) -> None:
    log = tmp_path / "bad.csv"
    log.write_text("step,epoch,lr\n1,0,0.1\n")
    with pytest.raises(UserError, match="loss"):
        plot_training_curves(log, tmp_path / "x.png")
    with pytest.raises(UserError, match="does not exist"):
        plot_training_curves(tmp_path / "missing.csv", tmp_path / "x.png")


def test_embedding_map(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(130) % 4
    feats = 5 * torch.randn(4, 64, generator=g)[labels] + torch.randn(130, 64, generator=g)
    out = plot_embedding_map(  # a sample of max_points of them
        feats, labels, tmp_path / "tsne.png", class_names=["a", "b", "c", "d"], max_points=100
    )
    _check_png(out, 400, 400)
    with pytest.raises(UserError, match="class_names"):
        plot_embedding_map(feats, labels, tmp_path / "t2.png", class_names=["a"], max_points=50)


def test_neighbor_grid_gray_and_rgb(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    gray = torch.randint(0, 256, (30, 1, 8, 8), generator=g, dtype=torch.uint8)
    feats = torch.randn(30, 16, generator=g)
    labels = torch.arange(30) % 3
    out = plot_neighbor_grid(gray, feats, tmp_path / "nn_gray.png", num_queries=4, k=5, labels=labels)
    _check_png(out, 300, 200)
    rgb = torch.randint(0, 256, (6, 3, 8, 8), generator=g, dtype=torch.uint8)
    # k larger than the number of other images is clipped to N - 1.
    out2 = plot_neighbor_grid(rgb, feats[:6], tmp_path / "nn_rgb.png", num_queries=2, k=10)
    _check_png(out2, 300, 100)
    with pytest.raises(UserError, match="rows"):
        plot_neighbor_grid(rgb, feats, tmp_path / "bad.png")
