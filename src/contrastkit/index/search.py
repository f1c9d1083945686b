"""Indexes of a run's embeddings and queries against them: ``contrastkit index`` / ``search``.

An index lives in ``RUN_DIR/index/NAME/`` (NAME from the data spec unless given). Queries are
text, or a path to an image file; they are encoded by the run's own encoder: the sentence
encoder of a text run, the image encoder of an image run, either tower of an image–text run
(so text→image and image→text search work in the shared space).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contrastkit.errors import UserError, closest
from contrastkit.index.faiss_index import META_FILE, EmbeddingIndex, IndexMeta, require_faiss

INDEX_DIR = "index"
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")


@dataclass
class Hit:
    """One search result."""

    rank: int
    score: float
    id: int
    item: Any


def index_name(spec: str) -> str:
    """A folder name for a data spec: 'sick:test' → 'sick-test', '/a/b/corpus.txt' → 'corpus'."""
    path = Path(spec.partition("#")[0])
    base = path.stem if path.suffix else spec
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.")
    return name or "index"


def available_indexes(run_dir: Path) -> list[str]:
    folder = Path(run_dir) / INDEX_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / META_FILE).is_file())


def _embed(run_dir: Path, spec: str, batch_size: int) -> tuple[np.ndarray, list[Any], str]:
    from contrastkit.pipeline import embed, read_run_config

    cfg = read_run_config(run_dir)
    if cfg.task in ("text", "image_text"):
        from contrastkit.text_pipeline import embed_items

        return embed_items(run_dir, cfg, spec, batch_size=batch_size, unique=True)
    if cfg.task != "image":
        raise UserError(f"contrastkit index works on image, text and image_text runs; this run's task is {cfg.task!r}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "features.npy"
        embed(run_dir, spec, out, batch_size=batch_size)
        vectors = np.load(out)
        labels_file = out.with_name("features.labels.npy")
        labels = np.load(labels_file) if labels_file.is_file() else None
    classes = _class_names(cfg, spec)
    items: list[Any] = []
    for i in range(vectors.shape[0]):
        item: dict[str, Any] = {"image": f"{spec}#{i}"}
        if labels is not None:
            label = int(labels[i])
            item["label"] = classes[label] if label < len(classes) else label
        items.append(item)
    return vectors, items, "image"


def _class_names(cfg: Any, spec: str) -> list[str]:
    from contrastkit.data.image.datasets import FASHION_MNIST_CLASSES

    name = spec.partition(":")[0]
    if name == "fashion-mnist":
        return list(FASHION_MNIST_CLASSES)
    if name == "digits":
        return [str(d) for d in range(10)]
    return []


def build_index(
    run_dir: str | Path,
    spec: str,
    *,
    kind: str = "auto",
    name: str | None = None,
    batch_size: int = 256,
) -> tuple[Path, IndexMeta]:
    """Embed SPEC with the run's encoder and save a faiss index in RUN_DIR/index/NAME."""
    require_faiss()
    run_dir = Path(run_dir)
    vectors, items, modality = _embed(run_dir, spec, batch_size)
    index = EmbeddingIndex.build(vectors, items, kind=kind, modality=modality, source=spec)
    folder = index.save(run_dir / INDEX_DIR / (name or index_name(spec)))
    return folder, index.meta


def _open_index(run_dir: Path, name: str | None) -> EmbeddingIndex:
    names = available_indexes(run_dir)
    if not names:
        raise UserError(f"run {str(run_dir)!r} has no index yet; build one with: contrastkit index {run_dir} --data SPEC")
    if name is None:
        if len(names) > 1:
            raise UserError(f"run {str(run_dir)!r} has several indexes ({', '.join(names)}); pick one with --index")
        name = names[0]
    if name not in names:
        raise UserError(f"no index {name!r} in {run_dir}{closest(name, names)}; indexes: {', '.join(names)}")
    return EmbeddingIndex.load(Path(run_dir) / INDEX_DIR / name)


def is_image_query(query: str) -> bool:
    path = Path(query)
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def _read_query_image(path: str, channels: int, size: int) -> Any:
    from torchvision.io import ImageReadMode, decode_image

    from contrastkit.data.image.datasets import resize_uint8

    try:
        img = decode_image(path, mode=ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY)
    except Exception as exc:
        raise UserError(f"cannot read query image {path!r}: {exc}") from None
    return resize_uint8(img[None], size)


def encode_query(run_dir: Path, query: str) -> tuple[np.ndarray, str]:
    """The query's embedding with the run's encoder, and its modality ('text' or 'image')."""
    import torch

    from contrastkit.pipeline import read_run_config, setup_runtime

    cfg = read_run_config(run_dir)
    image = is_image_query(query)
    if cfg.task in ("text", "image_text"):
        from contrastkit.text_pipeline import encode_images, encode_texts, load_run_model, read_meta

        device = setup_runtime(cfg)
        model = load_run_model(run_dir, cfg, device)
        if not image:
            return encode_texts(model, cfg, [query]).numpy(), "text"
        if cfg.task == "text":
            raise UserError(f"this is a text run: query with text, not an image file ({query!r})")
        meta = read_meta(run_dir)
        x = _read_query_image(query, int(meta["channels"]), int(meta["size"]))
        return encode_images(model, meta, x).numpy(), "image"
    if cfg.task != "image":
        raise UserError(f"contrastkit search works on image, text and image_text runs; this run's task is {cfg.task!r}")
    if not image:
        raise UserError(
            f"this is an image run: the query must be an image file ({', '.join(IMAGE_SUFFIXES)}); "
            f"{query!r} is not one"
        )
    from contrastkit.data.image import eval_transform
    from contrastkit.pipeline import input_size, load_split, load_trained_model

    device = setup_runtime(cfg)
    ref = load_split(cfg, "train")
    size = input_size(cfg, ref)
    trained: Any = load_trained_model(run_dir, cfg, ref.channels, size, device)
    x = _read_query_image(query, ref.channels, size)
    transform = eval_transform(size=size, mean=ref.mean(), std=ref.std())
    with torch.no_grad():
        z = trained.encoder(transform(x.to(device)))
    return z.float().cpu().numpy(), "image"


def search_run(run_dir: str | Path, query: str, *, k: int = 10, name: str | None = None) -> tuple[IndexMeta, str, list[Hit]]:
    """Top-k items of a run's index for a text or image-file query."""
    from contrastkit.pipeline import read_run_config

    run_dir = Path(run_dir)
    read_run_config(run_dir)  # a clear error for a folder that is not a run
    index = _open_index(run_dir, name)
    vector, modality = encode_query(run_dir, query)
    scores, ids = index.search(vector, k)
    hits = [
        Hit(rank + 1, float(s), int(i), index.items[int(i)])
        for rank, (s, i) in enumerate(zip(scores[0], ids[0], strict=True))
        if int(i) >= 0
    ]
    return index.meta, modality, hits
