"""The task protocol: one application (images, text, recommendation, ...) as a plug-in, and the
run object through which a finished run is used.

A task is a :class:`Task` subclass registered with :func:`register_task`; one instance serves
one run (``Task(cfg)``). It declares the config sections it reads (``sections``, ``unread``),
names the method used when a recipe gives none, and has three hooks, all with one calling
convention (the :class:`RunContext` of the run):

    training(ctx) -> Training        the step, its batches, callbacks and unit, for the one loop
    after_training(ctx, summary)     save the trained artifacts; extra results.json entries
    load(run_dir) -> TrainedRun      the run folder opened for use

A :class:`TrainedRun` evaluates the run, prints its results and writes embeddings; what more it
can do is declared by the capability protocols below (:class:`EncodesImages`,
:class:`EncodesTexts`, :class:`EmbedsItems`, :class:`AnswersQueries`, :class:`MinesNegatives`, :class:`BrowsesImages`,
:class:`Recommends`, :class:`FindsSimilar`, :class:`HasKeyedVectors`, :class:`Acts`), which the
CLI, ``serve``, ``export`` and ``index`` test with ``isinstance``. No task imports another: what
two tasks share lives below ``tasks/``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from contrastkit.config import Config
from contrastkit.errors import UserError, check_choice
from contrastkit.index.keyed import KeyedVectors
from contrastkit.runs import read_results
from contrastkit.training import Training, TrainSummary, evaluation_runtime, run_device

T = TypeVar("T", bound="type[Task]")
M = TypeVar("M")

# files whose change means new weights (a run object then loads its models again)
WEIGHT_FILES = ("config.yaml", "checkpoints/last.pt", "checkpoints/best.pt", "encoder.safetensors", "text_encoder")


@dataclass
class RunContext:
    """What every training hook needs: the config, the run folder, the device and the process's
    place under torchrun."""

    cfg: Config
    run_dir: Path
    device: torch.device
    rank: int = 0
    world_size: int = 1
    resume: bool = False
    verbose: bool = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def local_batch(self) -> int:
        return self.cfg.train.batch_size // self.world_size

    def log(self, message: str) -> None:
        if self.verbose and self.is_main:
            print(message, flush=True)


def _seeded(evaluate: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    @functools.wraps(evaluate)
    def seeded(self: TrainedRun, *args: Any, **kwargs: Any) -> dict[str, Any]:
        with evaluation_runtime(self.config.train, self.device):
            return evaluate(self, *args, **kwargs)

    return seeded


def number(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``; "nan" where results.json has null (a NaN, an absent figure)."""
    return format(float("nan") if value is None else value, spec)


def trained_line(train: dict[str, Any], what: str = "steps", epochs: bool = True) -> str:
    """"trained N steps (E epochs) in Ts, R units/s" from results.json's ``train`` entry (an
    older run folder's ``images_per_sec`` included)."""
    rate, unit = train.get("throughput", train.get("images_per_sec")), train.get("unit", "samples")
    done = f" ({number(train.get('epochs_done'), '.1f')} epochs)" if epochs else ""
    return (f"trained {train.get('steps')} {what}{done} in {number(train.get('seconds'), '.0f')}s, "
            f"{number(rate, '.0f')} {unit}/s")


# ----------------------------------------------------------------------------- the run object


class TrainedRun:
    """A run folder opened for use: its config, results, evaluation and embeddings. Models are
    loaded when first needed and kept (once per state of the run's saved weights: a run that
    trains on while this object lives is picked up). Opening a run changes nothing in the
    process; ``evaluate`` (every subclass's) runs seeded with ``train.seed`` and with
    ``train.num_threads``, and leaves the caller's random state and threads as they were."""

    # what the things a run embeds are called in its answers (`contrastkit similar`: "word" for word runs)
    noun: ClassVar[str] = "item"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("evaluate")
        if own is not None:
            cls.evaluate = _seeded(own)  # type: ignore[method-assign]

    def __init__(self, path: Path, cfg: Config) -> None:
        self.path = Path(path)
        self.config = cfg
        self._device: torch.device | None = None
        self._cache: dict[str, tuple[tuple[int, ...], Any]] = {}

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def device(self) -> torch.device:
        """Where the run's models compute (``train.device``; a finished run uses one process)."""
        if self._device is None:
            self._device = run_device(self.config.train)
        return self._device

    @property
    def results(self) -> dict[str, Any]:
        """The run's results.json as it is now ({"run_dir": ...} before training ended)."""
        return read_results(self.path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, task={self.task!r}, method={self.config.method.name!r})"

    def cached(self, what: str, build: Callable[[], M]) -> M:
        """``build()`` once per ``what`` and state of the run's saved weights."""
        stamps = tuple(p.stat().st_mtime_ns for p in (self.path / name for name in WEIGHT_FILES) if p.exists())
        hit = self._cache.get(what)
        if hit is None or hit[0] != stamps:
            hit = (stamps, build())
            self._cache[what] = hit
        value: M = hit[1]
        return value

    # ------------------------------------------------------------------ what every run offers

    def evaluate(self, *, verbose: bool = True) -> dict[str, Any]:
        """Evaluate the run's trained model (results.json's ``eval``)."""
        raise UserError(f"task {self.task!r} has no evaluation")

    def results_table(self, ev: dict[str, Any]) -> str:
        """The evaluation for the terminal: a title line and a small fixed-width table."""
        return "(no evaluation table)"

    def headline(self, results: dict[str, Any]) -> str:
        """The line `contrastkit train` prints about training."""
        tr = results.get("train", {})
        return f"{trained_line(tr)}, final loss {number(tr.get('final_loss'), '.4f')}"

    def compare_row(self, results: dict[str, Any]) -> dict[str, Any]:
        """Headline figures for ``contrastkit compare`` (column name → number or text)."""
        return {}

    def embed(self, spec: str | None, out: Path, *, batch_size: int = 512) -> tuple[int, int]:
        """Write embeddings of the data ``spec`` (None: the task's default) to ``out``; returns
        (rows, dimensions)."""
        raise UserError(f"task {self.task!r} cannot export embeddings")


# ----------------------------------------------------------------------------- capabilities


@dataclass(frozen=True)
class ImageInput:
    """How a run's image tower takes images: uint8 (N, channels, size, size), scaled to [0, 1]
    and normalised with mean / std; ``arch`` and ``cifar_stem``: the encoder it was built as."""

    arch: str
    cifar_stem: bool
    channels: int
    size: int
    mean: list[float]
    std: list[float]


@runtime_checkable
class EncodesImages(Protocol):
    """Images in, embeddings out: the image tower (and the projection of a two-tower run)."""

    def image_input(self) -> ImageInput: ...

    def image_model(self) -> tuple[nn.Module, nn.Module | None]: ...

    def encode_images(self, images: Tensor, *, batch_size: int = 512) -> Tensor: ...

    def sample_images(self, n: int) -> Tensor: ...


@runtime_checkable
class EncodesTexts(Protocol):
    """Texts in, embeddings out: the text tower (a TextEncoder) and the projection, if any."""

    def text_model(self) -> tuple[Any, nn.Module | None]: ...

    def encode_texts(self, texts: list[str], *, batch_size: int = 256) -> Tensor: ...

    def sample_texts(self) -> list[str]: ...


@runtime_checkable
class EmbedsItems(Protocol):
    """Embeddings of the items of a data spec with a description per item (for an index)."""

    def embed_items(
        self, spec: str, *, batch_size: int = 256, unique: bool = False
    ) -> tuple[np.ndarray, list[dict[str, Any]], str]: ...


@runtime_checkable
class MinesNegatives(Protocol):
    """Mines hard negatives for (anchor, positive) pairs from a corpus with its encoder and writes
    (anchor, positive, negative) rows (``contrastkit mine``)."""

    def mine(
        self, corpus: str | None, out: str | Path, *, pairs: str | None = None, negatives: int = 1,
        margin: float | None = None, range_min: int = 0, range_max: int | None = None, k: int | None = None,
        batch_size: int = 256,
    ) -> dict[str, Any]: ...


@runtime_checkable
class AnswersQueries(Protocol):
    """Encodes a search query (a text, or an image file) into the space of the run's index."""

    def query_modalities(self) -> tuple[str, ...]: ...

    def encode_query(self, query: str) -> tuple[np.ndarray, str]: ...


@runtime_checkable
class BrowsesImages(Protocol):
    """Has images to show (``contrastkit serve``'s gallery): their spec and the uint8 images."""

    def gallery_spec(self) -> str | None: ...

    def images(self, spec: str) -> Tensor: ...


@runtime_checkable
class Recommends(Protocol):
    """Recommends items to the users of its interaction data."""

    def interactions(self) -> Any: ...

    def recommend(self, user: str, k: int = 10) -> list[dict[str, Any]]: ...


@runtime_checkable
class FindsSimilar(Protocol):
    """Lists the items (or words) closest to one of its own."""

    def similar(self, item: str, k: int = 10) -> list[dict[str, Any]]: ...


@runtime_checkable
class HasKeyedVectors(Protocol):
    """Vectors by word or item id (``export --format word2vec`` writes them for gensim)."""

    def keyed_vectors(self) -> KeyedVectors: ...


@runtime_checkable
class Acts(Protocol):
    """An agent that acts in an environment (``export --format sb3`` writes it for Stable-Baselines3)."""

    def agent(self) -> Any: ...

    def q_values(self, obs: Any) -> np.ndarray: ...


@runtime_checkable
class AnswersAnalogies(Protocol):
    """Word runs: gensim-style ``most_similar(positive, negative, k)`` over the vocabulary's
    vectors (also offered as ``vectors``)."""

    def most_similar(
        self, positive: str | Sequence[str] = (), negative: str | Sequence[str] = (), k: int = 10
    ) -> list[tuple[str, float]]: ...


# ----------------------------------------------------------------------------- the task


@dataclass(frozen=True)
class ValidationSpec:
    """How a task validates a run of a config: on data held out of training (never the test
    split), measured by the one :class:`~contrastkit.training.callbacks.Validation` callback.

    ``metric`` is the name it is logged under (train_log.csv, TensorBoard, results.json's
    ``validation.metric``) and ``direction`` "max" or "min". ``overrides`` are the settings that
    switch the validation on where the config has none (e.g. ``eval.val_size=5000`` for images);
    applied to a config that validates already, they are empty. ``every`` names the option that
    sets how often it is measured during training (e.g. ``eval.monitor_every``), the intermediate
    values a sweep's pruner reads; None where the task measures at the end only."""

    metric: str
    direction: str
    overrides: tuple[str, ...] = ()
    every: str | None = None


class Task:
    """Base of every task: one instance per run. Override the hooks; the defaults say what is
    optional."""

    name: ClassVar[str] = ""
    sections: ClassVar[dict[str, type | None]] = {}  # own sections; a common one replaced, or None: not read
    unread: ClassVar[dict[str, tuple[str, ...]]] = {}  # keys of a section this task does not read
    default_method: ClassVar[str] = ""
    runs: ClassVar[tuple[type[TrainedRun], ...]] = (TrainedRun,)  # what load() may return

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    @classmethod
    def validate(cls, cfg: Config) -> None:
        """Rules across sections, checked when the config is built (each field is already
        checked against its declaration)."""

    @classmethod
    def needs(cls, cfg: Config) -> tuple[str, str]:
        """What a config of this task trains on (a data set, a file, an environment) and the
        optional extra it needs ('' for none): the columns of ``contrastkit recipes``. By
        default: the image data set of a task that reads the ``data`` section."""
        from contrastkit.data.image.spec import needed_data

        return (needed_data(cfg.data) if "data" in cls.sections else ""), ""

    @classmethod
    def validation(cls, cfg: Config) -> ValidationSpec:
        """How runs of ``cfg`` are validated (metric, direction, the settings that switch it on);
        a one-line :class:`UserError` where this task or config has no validation data. A run
        that validates records results.json's ``validation`` (``Validation.results()``), with its
        figure in ``validation.value``, apart from the test figures in ``eval``."""
        raise UserError(f"task {cls.name} has no validation split to measure a run on")

    def training(self, ctx: RunContext) -> Training:
        """Data, model, step, batches and callbacks of a run (``ctx.resume``: continuing one);
        the one loop runs it."""
        raise NotImplementedError

    def describe(self, ctx: RunContext) -> str:
        """One line printed before training: what is trained on what."""
        return f"training {ctx.cfg.method.name} on {ctx.device}"

    def after_training(self, ctx: RunContext, summary: TrainSummary) -> dict[str, Any]:
        """Save the trained artifacts (rank 0 only) and return extra entries for results.json."""
        return {}

    def load(self, run_dir: Path) -> TrainedRun:
        """The run folder opened for use (nothing is loaded until needed)."""
        return self.runs[0](Path(run_dir), self.cfg)


# ----------------------------------------------------------------------------- registry

_TASKS: dict[str, type[Task]] = {}


def register_task(cls: T) -> T:
    """Class decorator: register a task under its ``name``."""
    if not cls.name:
        raise ValueError(f"task class {cls.__name__} has no name")
    if cls.name in _TASKS:
        raise ValueError(f"task {cls.name!r} is registered twice")
    _TASKS[cls.name] = cls
    return cls


def unregister_task(name: str) -> None:
    """Forget a registered task (tests that register their own)."""
    _TASKS.pop(name, None)


def registered_tasks() -> list[type[Task]]:
    """The tasks registered so far (``contrastkit.tasks`` registers the built-in ones)."""
    return list(_TASKS.values())


def lookup_task(name: str) -> type[Task]:
    """The registered task ``name``; a one-line error listing the tasks there are."""
    check_choice("task", name, list(_TASKS))
    return _TASKS[name]


def require(run: TrainedRun, capability: type, command: str, tasks: list[type[Task]]) -> Any:
    """``run`` if it offers ``capability`` (a protocol above), else a one-line error naming
    the tasks whose runs do."""
    if isinstance(run, capability):
        return run
    able = [t.name for t in tasks if any(issubclass(r, capability) for r in t.runs)]
    raise UserError(
        f"contrastkit {command} works on runs of task {' / '.join(able) or 'none'}; "
        f"this run's task is {run.task!r}" + _not_this_kind(run, capability, tasks)
    )


def _not_this_kind(run: TrainedRun, capability: type, tasks: list[type[Task]]) -> str:
    """' (this kind of ... run cannot)' when the run's task has other runs that can."""
    for task in tasks:
        if task.name == run.task and any(issubclass(r, capability) for r in task.runs):
            return f" ({getattr(run, 'kind', type(run).__name__)} runs cannot)"
    return ""
