"""The Python face of contrastkit: train a recipe, open a finished run, and use it. The command
line is a thin layer over these: ``contrastkit embed`` is :meth:`Run.embed`, ``search`` is
:meth:`Run.search`, and so on.

>>> import contrastkit
>>> run = contrastkit.train(overrides={"train.max_steps": 20})      # doctest: +SKIP
>>> run = contrastkit.load_run("runs/digits")                       # doctest: +SKIP
>>> features = run.encode(["a.png", "b.png"])                       # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from contrastkit.config import Config
from contrastkit.errors import UserError
from contrastkit.recipes import apply_overrides, load_config, read_run_config
from contrastkit.runner import load_run as _open_folder
from contrastkit.runner import open_run, run_all
from contrastkit.runs import CONFIG_FILE, new_run_dir
from contrastkit.tasks import (
    AnswersAnalogies,
    AnswersQueries,
    EmbedsItems,
    EncodesImages,
    EncodesTexts,
    FindsSimilar,
    MinesNegatives,
    Recommends,
    TrainedRun,
    all_tasks,
    capable,
)

__all__ = ["Run", "load_run", "train"]


class Run:
    """A run folder, trained or being trained, opened for use.

    Every run has :attr:`config`, :attr:`results` (its results.json), :attr:`task`,
    :meth:`evaluate`, :meth:`embed`, :meth:`export` and :meth:`report`. What else it offers
    depends on its task; a method the run's task does not offer is a one-line
    :class:`~contrastkit.errors.UserError` naming the tasks that do:

    - image runs: :meth:`encode` (files, PIL images, arrays, tensors);
    - text runs: :meth:`encode` (strings);
    - image–text runs: :meth:`encode_image`, :meth:`encode_text`;
    - image, text and image–text runs: :meth:`index` and :meth:`search`;
    - text runs: :meth:`mine` (hard negatives for (anchor, positive) pairs);
    - recommendation and item2vec runs: :attr:`user_vectors`, :attr:`item_vectors`,
      :meth:`recommend`, :meth:`similar`;
    - word-vector runs: :attr:`vectors`, :meth:`most_similar` (analogies), :meth:`similar`.

    Models are loaded on first use and kept; they compute on the run's device
    (``train.device``). The task's own run object is :attr:`trained`.
    """

    def __init__(self, trained: TrainedRun) -> None:
        self.trained = trained

    @classmethod
    def open(cls, path: str | Path, overrides: list[str] | dict[str, Any] | None = None) -> Run:
        """Open the run folder ``path`` (``overrides``: ``eval.*`` / ``train.device`` for this use)."""
        return cls(_open_folder(path, overrides))

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, task={self.task!r}, method={self.method!r})"

    # ------------------------------------------------------------------ every run

    @property
    def path(self) -> Path:
        """The run folder."""
        return self.trained.path

    @property
    def config(self) -> Config:
        """The run's configuration (its config.yaml)."""
        return self.trained.config

    @property
    def task(self) -> str:
        return self.trained.task

    @property
    def method(self) -> str:
        return self.trained.config.method.name

    @property
    def results(self) -> dict[str, Any]:
        """results.json as it is now: ``train``, ``eval`` and the task's own entries."""
        return self.trained.results

    def evaluate(self, *, verbose: bool = True, report: bool | None = None) -> dict[str, Any]:
        """Evaluate the trained model again (seeded: the same figures each time); results.json's
        ``eval`` and, with ``report`` (default: the run's ``eval.report``), report.html follow."""
        from contrastkit.runner import evaluate

        return evaluate(self.trained, verbose=verbose, report=report)

    def embed(self, data: str | None, out: str | Path, *, batch_size: int = 512) -> tuple[int, int]:
        """Write the embeddings of ``data`` (an image run: NAME[:SPLIT] or a folder; a text run:
        a text file; a recommendation run: users / items / all) to ``out`` — what
        ``contrastkit embed`` writes; returns (rows, dimensions)."""
        return self.trained.embed(data, Path(out), batch_size=_positive(batch_size))

    def export(self, format: str, out: str | Path, *, data: str | None = None, verbose: bool = True) -> Path:
        """Export the run as ``format`` (``contrastkit export --help`` lists them) to ``out``;
        ``verbose`` prints what was written and how to load it. Returns ``out``."""
        from contrastkit.export import export_run

        lines = export_run(self.path, format, Path(out), data)
        if verbose:
            print("\n".join(lines))
        return Path(out)

    def report(self, out: str | Path | None = None) -> Path:
        """Write the run's HTML report (default: report.html in the run folder); returns its path."""
        from contrastkit.report import write_report

        return write_report([self.path], None if out is None else Path(out))

    # ------------------------------------------------------------------ encoders

    def encode(self, inputs: Any, *, batch_size: int = 256) -> Tensor:
        """Embeddings (N, D) on the CPU, computed on the run's device, as ``contrastkit embed``
        computes them. An image run takes image file paths, PIL images, numpy arrays (H, W[, C])
        / (N, H, W[, C]) or tensors (C, H, W) / (N, C, H, W), uint8 or floats in [0, 1], alone
        or in a list (resized to the run's size; see :mod:`contrastkit.data.image.inputs`); a
        text run takes a string or a list of strings. An image–text run has two encoders:
        :meth:`encode_image` and :meth:`encode_text`."""
        if isinstance(self.trained, EncodesImages) and isinstance(self.trained, EncodesTexts):
            raise UserError("an image–text run has two encoders: use run.encode_image(...) or run.encode_text(...)")
        if isinstance(self.trained, EncodesTexts):
            return self.encode_text(inputs, batch_size=batch_size)
        if isinstance(self.trained, EncodesImages):
            return self.encode_image(inputs, batch_size=batch_size)
        able = [t.name for t in all_tasks() if any(issubclass(r, EncodesImages | EncodesTexts) for r in t.runs)]
        raise UserError(f"contrastkit encode works on runs of task {' / '.join(able)}; this run's task is {self.task!r}")

    def encode_image(self, images: Any, *, batch_size: int = 256) -> Tensor:
        """Image embeddings (N, D); the inputs :meth:`encode` takes for an image run."""
        from contrastkit.data.image.inputs import as_image_batch

        run: Any = capable(self.trained, EncodesImages, "encode_image")
        inp = run.image_input()
        out: Tensor = run.encode_images(as_image_batch(images, inp.channels, inp.size), batch_size=_positive(batch_size))
        return out

    def encode_text(self, texts: str | list[str], *, batch_size: int = 256) -> Tensor:
        """Text embeddings (N, D) of a string or a list of strings."""
        run: Any = capable(self.trained, EncodesTexts, "encode_text")
        batch = [texts] if isinstance(texts, str) else list(texts)
        wrong = next((t for t in batch if not isinstance(t, str)), None)
        if wrong is not None or not batch:
            got = type(wrong).__name__ if batch else "an empty list"
            raise UserError(f"encode_text takes a string or a list of strings; got {got}")
        out: Tensor = run.encode_texts(batch, batch_size=_positive(batch_size))
        return out

    # ------------------------------------------------------------------ search

    def index(self, data: str, *, kind: str = "auto", name: str | None = None, batch_size: int = 256) -> Path:
        """Embed ``data`` with the run's encoder and save a faiss index of it in the run folder
        (``contrastkit index``); returns the index folder."""
        from contrastkit.index.search import build_index

        capable(self.trained, EmbedsItems, "index")
        folder, _ = build_index(self.trained, data, kind=kind, name=name, batch_size=_positive(batch_size))
        return folder

    def search(self, query: str, k: int = 10, *, index: str | None = None) -> list[dict[str, Any]]:
        """The ``k`` items of the run's index (``index``: its name, when it has several) closest to
        ``query`` — a text, or an image file for runs that encode images: one dict per hit with
        ``rank``, ``score`` and the item (its ``text`` or ``image``, its ``label`` where known)."""
        from contrastkit.index.search import search_run

        capable(self.trained, AnswersQueries, "search")
        _, _, hits = search_run(self.trained, query, k=_positive(k, "k"), name=index)
        return [{"rank": h.rank, "score": h.score, **(h.item if isinstance(h.item, dict) else {"item": h.item})} for h in hits]

    def mine(
        self, corpus: str | None, out: str | Path, *, pairs: str | None = None, negatives: int = 1,
        margin: float | None = None, range_min: int = 0, range_max: int | None = None, k: int | None = None,
        sampling: str = "top", seed: int = 0, batch_size: int = 256,
    ) -> dict[str, Any]:
        """Hard negatives for the run's training pairs (or ``pairs``: ``FILE#ANCHOR,POSITIVE``)
        from ``corpus`` (a text data spec; None: the pairs' positives), by faiss search with the
        run's encoder: ``negatives`` per pair, the anchor's known positives left out, only ranks
        ``range_min`` + 1 to ``range_max`` of the ``k`` nearest, and with ``margin`` none more
        similar to the anchor than the positive's similarity minus ``margin``; of those left, the
        nearest (``sampling="top"``) or a seeded random draw (``"random"``). Writes (anchor,
        positive, negative) rows to ``out`` (.tsv, .csv or .jsonl) — what ``contrastkit mine``
        writes — and returns what the filters did (``rows``, ``pairs_short``, ...)."""
        run: Any = capable(self.trained, MinesNegatives, "mine")
        stats: dict[str, Any] = run.mine(
            corpus, out, pairs=pairs, negatives=negatives, margin=margin, range_min=range_min, range_max=range_max,
            k=k, sampling=sampling, seed=seed, batch_size=_positive(batch_size),
        )
        return stats

    # ------------------------------------------------------------------ users, items and words

    @property
    def user_vectors(self) -> Tensor:
        """(users, D): one row per user id of the run's data, in the order of :attr:`user_ids`."""
        return self._vectors("user_vectors")[0]

    @property
    def item_vectors(self) -> Tensor:
        """(items, D): one row per item id of the run's data, in the order of :attr:`item_ids`."""
        return self._vectors("item_vectors")[1]

    @property
    def user_ids(self) -> list[str]:
        run: Any = capable(self.trained, Recommends, "user_ids")
        return list(run.interactions().user_ids)

    @property
    def item_ids(self) -> list[str]:
        run: Any = capable(self.trained, Recommends, "item_ids")
        return list(run.interactions().item_ids)

    def _vectors(self, what: str) -> tuple[Tensor, Tensor]:
        from contrastkit.index.vectors import UserItemVectors

        run = capable(self.trained, Recommends, what)
        assert isinstance(run, UserItemVectors)  # the recommending runs are the user–item ones
        return run.vectors()

    def recommend(self, user: str, k: int = 10) -> list[dict[str, Any]]:
        """Top-``k`` items for one of the data's user ids (items the user has seen left out):
        dicts with ``item``, ``title`` and ``score``."""
        run: Any = capable(self.trained, Recommends, "recommend")
        rows: list[dict[str, Any]] = run.recommend(str(user), _positive(k, "k"))
        return rows

    def similar(self, item: str, k: int = 10) -> list[dict[str, Any]]:
        """The ``k`` items (or words) closest to ``item`` by cosine: dicts with ``item``, ``title``
        and ``score``."""
        run: Any = capable(self.trained, FindsSimilar, "similar")
        rows: list[dict[str, Any]] = run.similar(str(item), _positive(k, "k"))
        return rows

    def most_similar(
        self, positive: str | Sequence[str] = (), negative: str | Sequence[str] = (), k: int = 10
    ) -> list[tuple[str, float]]:
        """Word runs: the ``k`` words closest to the sum of the ``positive`` words' unit vectors
        less the ``negative`` ones' (``most_similar(["king", "woman"], ["man"])``), the query
        words left out — what gensim's ``KeyedVectors.most_similar`` answers."""
        run: Any = capable(self.trained, AnswersAnalogies, "most_similar")
        found: list[tuple[str, float]] = run.most_similar(positive, negative, k)
        return found

    @property
    def vectors(self) -> Any:
        """Word runs: the vocabulary's vectors (``run.vectors["doctor"]``, ``"doctor" in
        run.vectors``, ``len(run.vectors)``)."""
        run: Any = capable(self.trained, AnswersAnalogies, "vectors")
        return run.vectors


def _positive(value: int, name: str = "batch_size") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return value


def load_run(path: str | Path, overrides: list[str] | dict[str, Any] | None = None) -> Run:
    """Open the run folder ``path`` for use (see :class:`Run`); ``overrides`` change ``eval.*`` or
    ``train.device`` for this use, e.g. ``{"train.device": "cpu"}``."""
    return Run.open(path, overrides)


def train(
    recipe: str | None = None,
    *,
    overrides: dict[str, Any] | list[str] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    evaluate: bool = True,
    progress: bool = True,
) -> Run:
    """Train a recipe (a shipped name, a YAML path, or None: SimCLR on the digits) with
    ``overrides`` (``{"train.epochs": 3}`` or ``["train.epochs=3"]``) into the run folder ``out``
    (default runs/NAME-TIMESTAMP), evaluate it (``evaluate``), and return the run — what
    ``contrastkit train`` does. ``resume=True`` continues the run in ``out`` from its last
    checkpoint."""
    if resume and out is not None and (Path(out) / CONFIG_FILE).is_file():
        if recipe is not None:
            raise UserError("resume continues the run's own recipe; leave recipe out")
        cfg = apply_overrides(read_run_config(Path(out)), overrides)
    else:
        cfg = load_config(recipe, overrides)
    if not evaluate:
        cfg.eval.enabled = False
    run_dir = new_run_dir(cfg, None if out is None else str(out), resume)
    run_all(cfg, run_dir, resume=resume, progress=progress)
    return Run(open_run(cfg, run_dir))
