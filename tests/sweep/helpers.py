"""Tiny digits sweeps: a 8-wide network, 6 steps of 64 images, kNN validation every 3 steps."""

from __future__ import annotations

TINY = [
    "model.width=8", "model.projection_hidden_dim=32", "model.projection_dim=16", "train.batch_size=64",
    "train.max_steps=6", "train.checkpoint_every=3", "train.log_every=3", "train.num_threads=1", "train.progress=false",
    "eval.few_label_shots=[5]", "eval.few_label_draws=1", "eval.baselines=false", "eval.plots=false", "eval.knn_k=20",
]
SPACE = ["--space", "method.temperature=0.05:0.5:log", "--space", "optim.lr=0.0005:0.005:log"]


def sets(*extra: str) -> list[str]:
    return [x for s in (*TINY, *extra) for x in ("--set", s)]
