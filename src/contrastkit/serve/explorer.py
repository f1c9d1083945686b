"""What ``contrastkit serve`` shows of a run, without the web: queries against the run's
indexes, a gallery of test images with their neighbours, a user's history beside their
recommendations, and the run folder's files. Everything is found through the run object and
the capabilities it declares (:class:`~contrastkit.tasks.AnswersQueries`,
:class:`~contrastkit.tasks.BrowsesImages`, :class:`~contrastkit.tasks.Recommends`); the
searching is :mod:`contrastkit.index.search`'s.

Nothing here writes to the run folder. Files are served only from inside it (resolved, links
followed); images of data sets are rendered to PNG in memory and named by number.
"""

from __future__ import annotations

import io
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contrastkit.data.image.decode import IMAGE_SUFFIXES, is_image_file
from contrastkit.errors import UserError
from contrastkit.tasks import AnswersQueries, BrowsesImages, EmbedsItems, Recommends

MAX_K = 100
MAX_QUERY_CHARS = 1000
MAX_HISTORY = 500
FILE_SUFFIXES: tuple[str, ...] = (*IMAGE_SUFFIXES, ".json", ".jsonl", ".csv", ".txt", ".yaml", ".yml")
FILE_FOLDERS: tuple[str, ...] = ("", "plots")  # where the page lists files (any inside may be fetched)


class NotFound(UserError):
    """A user, image or index the run does not have (HTTP 404)."""


def image_suffix(data: bytes) -> str | None:
    """The file suffix of PNG, JPEG, GIF or WebP bytes (by their signature), else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if data.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return None


def check_k(k: int) -> int:
    if not 1 <= k <= MAX_K:
        raise UserError(f"k must be from 1 to {MAX_K}, got {k}")
    return k


@dataclass
class Gallery:
    """Images to browse: a data spec, their embeddings and their item descriptions."""

    spec: str
    vectors: np.ndarray
    items: list[dict[str, Any]]


class Explorer:
    """A run folder opened for reading: its task, indexes, gallery and interactions."""

    def __init__(self, run_dir: str | Path, *, log: Callable[[str], None] | None = None) -> None:
        from contrastkit.index.search import available_indexes, open_index
        from contrastkit.runner import load_run

        if not Path(run_dir).is_dir():
            raise UserError(f"run folder {str(run_dir)!r} does not exist")
        self.run_dir = Path(run_dir).resolve()
        self.run = load_run(self.run_dir)
        self.cfg = self.run.config
        self.lock = threading.Lock()  # one model computation at a time
        self.log = log or (lambda message: None)
        self.modalities = self.run.query_modalities() if isinstance(self.run, AnswersQueries) else ()
        names = available_indexes(self.run_dir) if self.modalities else []
        self.indexes = {name: open_index(self.run_dir, name) for name in names}
        self.gallery = self._gallery()
        sources = [self.gallery.spec] if self.gallery else []
        sources += [ix.meta.source for ix in self.indexes.values() if ix.meta.modality == "image"]
        self.image_specs = list(dict.fromkeys(sources))  # image sources, served by number: /image/<n>/<i>
        self._datasets: dict[str, Any] = {}
        self.interactions = self.run.interactions() if isinstance(self.run, Recommends) else None
        if not (self.indexes or self.gallery or self.interactions):
            hint = f"; build one with: contrastkit index {run_dir} --data SPEC" if self.modalities else ""
            raise UserError(
                f"run {str(run_dir)!r} (task {self.cfg.task}) has nothing to explore: no index, test "
                f"images or recommendations{hint}"
            )

    # ------------------------------------------------------------------ start-up

    def _gallery(self) -> Gallery | None:
        run = self.run
        spec = run.gallery_spec() if isinstance(run, BrowsesImages) else None
        if spec is None or not isinstance(run, EmbedsItems):
            return None
        self.log(f"embedding the images of {spec} with the run's encoder ...")
        try:
            vectors, items, _ = run.embed_items(spec)
        except UserError as exc:
            if not self.indexes:
                raise
            self.log(f"no test images to browse: {exc}")
            return None
        if not self.indexes:  # the neighbours of a test image among the test images
            from contrastkit.index import EmbeddingIndex

            bank = EmbeddingIndex.build(vectors, items, kind="flat", modality="image", source=spec)
            self.indexes[f"{spec} (in memory)"] = bank
        return Gallery(spec, vectors, items)

    # ------------------------------------------------------------------ answers

    def info(self) -> dict[str, Any]:
        cfg = self.cfg
        out: dict[str, Any] = {
            "run": self.run_dir.name, "task": cfg.task, "method": cfg.method.name,
            "search": None, "gallery": None, "recommend": None, "files": self.files(),
        }
        if self.indexes:
            out["search"] = {
                "modalities": list(self.modalities),
                "indexes": [
                    {"name": name, "count": ix.meta.count, "modality": ix.meta.modality, "kind": ix.meta.kind}
                    for name, ix in self.indexes.items()
                ],
            }
        if self.gallery is not None:
            g = self.gallery
            out["gallery"] = {
                "spec": g.spec, "count": len(g.items), "url": f"/image/{self.image_specs.index(g.spec)}/",
                "labels": [item.get("label") for item in g.items],
            }
        if self.interactions is not None:
            ids = self.interactions.user_ids
            out["recommend"] = {"users": len(ids), "sample": ids[:200]}
        return out

    def describe(self, item: Any) -> dict[str, Any]:
        """What the page shows of an index item: its text, label and image (a URL)."""
        if not isinstance(item, dict):
            return {"text": str(item)}
        out: dict[str, Any] = {k: str(item[k]) for k in ("text", "label") if k in item}
        if isinstance(item.get("image"), str):
            spec, _, row = item["image"].rpartition("#")
            out["name"] = item["image"]
            if spec in self.image_specs and row.isdigit():
                out["image"] = f"/image/{self.image_specs.index(spec)}/{row}"
        return out

    def _index(self, name: str | None) -> tuple[str, Any]:
        if not self.indexes:
            raise NotFound("this run has no index to search")
        if not name:
            return next(iter(self.indexes.items()))
        if name not in self.indexes:
            raise NotFound(f"no index {name!r}; indexes: {', '.join(self.indexes)}")
        return name, self.indexes[name]

    def _hits(self, index_name: str | None, vector: np.ndarray, k: int, skip: Any = None) -> tuple[str, list[dict[str, Any]]]:
        from contrastkit.index.search import search_index

        name, index = self._index(index_name)
        hits = search_index(index, vector, check_k(k) + (skip is not None))
        rows = [{"score": h.score, **self.describe(h.item)} for h in hits if skip is None or h.item != skip]
        return name, rows[:k]

    def _search(self, query: str, index_name: str | None, k: int) -> tuple[str, list[dict[str, Any]]]:
        from contrastkit.index.search import encode_query

        with self.lock:
            vector, _ = encode_query(self.run, query)
            return self._hits(index_name, vector, k)

    def search_text(self, query: str, index_name: str | None = None, k: int = 10) -> dict[str, Any]:
        query = query.strip()
        self._index(index_name)
        if "text" not in self.modalities:
            raise UserError("this run is searched with images: upload an image file")
        if not query or len(query) > MAX_QUERY_CHARS:
            raise UserError(f"type a query of 1 to {MAX_QUERY_CHARS} characters")
        if is_image_file(query):  # the CLI reads image paths; the page never reads the server's files
            raise UserError("a text query may not name an image file; upload the image instead")
        name, hits = self._search(query, index_name, k)
        return {"query": {"text": query}, "index": name, "hits": hits}

    def search_image(self, data: bytes, index_name: str | None = None, k: int = 10) -> dict[str, Any]:
        self._index(index_name)
        if "image" not in self.modalities:
            raise UserError("this run is searched with text: type a query")
        suffix = image_suffix(data)
        if suffix is None:
            raise UserError("not an image: upload a PNG, JPEG, GIF or WebP file")
        with tempfile.TemporaryDirectory(prefix="contrastkit-serve-") as folder:
            path = Path(folder) / f"query{suffix}"
            path.write_bytes(data)
            name, hits = self._search(str(path), index_name, k)
        return {"query": {"upload": True}, "index": name, "hits": hits}

    def neighbours(self, i: int, index_name: str | None = None, k: int = 10) -> dict[str, Any]:
        """The neighbours of gallery image i (itself left out)."""
        g = self.gallery
        if g is None or not 0 <= i < len(g.items):
            raise NotFound(f"no test image {i}")
        with self.lock:
            name, hits = self._hits(index_name, g.vectors[i : i + 1], k, skip=g.items[i])
        return {"query": self.describe(g.items[i]), "index": name, "hits": hits}

    def users(self, prefix: str = "", limit: int = 50) -> list[str]:
        data = self.interactions
        return [] if data is None else [u for u in data.user_ids if u.startswith(prefix)][:limit]

    def recommend(self, user: str, k: int = 10) -> dict[str, Any]:
        """A user's training items (with titles) and the task's recommendations for them."""
        data = self.interactions
        if data is None:
            raise NotFound("this run makes no recommendations")
        try:
            u = data.user_index(user)
        except UserError as exc:
            raise NotFound(str(exc)) from None
        rows = data.train[:, 0] == u
        items = data.train[rows, 1]
        if data.train_time is not None:
            items = items[np.argsort(data.train_time[rows], kind="stable")]
        history = [{"text": data.title(j) or data.item_ids[j], "name": data.item_ids[j]} for j in items[:MAX_HISTORY]]
        assert isinstance(self.run, Recommends)
        with self.lock:
            recs = self.run.recommend(user, check_k(k))
        return {
            "user": user, "history": history, "history_count": int(items.size),
            "recommendations": [{"score": r["score"], "text": r["title"] or r["item"], "name": r["item"]} for r in recs],
        }

    # ------------------------------------------------------------------ images and files

    def image_png(self, source: int, i: int) -> bytes:
        """Image i of image source ``source`` as PNG bytes."""
        from PIL import Image

        if not 0 <= source < len(self.image_specs):
            raise NotFound(f"no image source {source}")
        spec = self.image_specs[source]
        with self.lock:
            if spec not in self._datasets:
                assert isinstance(self.run, BrowsesImages)
                self._datasets[spec] = self.run.images(spec)
            images = self._datasets[spec]
        if not 0 <= i < images.shape[0]:
            raise NotFound(f"no image {i} in {spec}")
        pixels = images[i].cpu().permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(buffer, format="PNG")
        return buffer.getvalue()

    def resolve_file(self, relative: str) -> Path | None:
        """The file ``relative`` names inside the run folder, or None: outside it (``..``, an
        absolute path, a link out), missing, or not a kind of file the page shows."""
        if not relative or "\x00" in relative:
            return None
        try:
            path = (self.run_dir / relative).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not path.is_relative_to(self.run_dir) or not path.is_file():
            return None
        return path if path.suffix.lower() in FILE_SUFFIXES else None

    def files(self) -> list[str]:
        """The run's files the page links to (top level and plots/)."""
        found: list[str] = []
        for folder in FILE_FOLDERS:
            where = self.run_dir / folder
            if where.is_dir():
                for path in sorted(where.iterdir()):
                    rel = path.relative_to(self.run_dir).as_posix()
                    if self.resolve_file(rel) is not None:
                        found.append(rel)
        return found[:200]
