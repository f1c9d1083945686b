"""The task protocol: one application (images, text, recommendation, ...) as a plug-in.

A task is a :class:`Task` subclass registered with :func:`register_task`. It owns the config
sections it reads (``sections``), names the method used when a recipe gives none, and fills
in the steps of one life cycle, which :mod:`contrastkit.tasks.runner` drives the same way for
every task:

    validate → data → model → loader (+ callbacks) → Trainer.fit → after_training
             → evaluate → results table          (and later: embed / index / search / ...)

A task whose training is no stream of batches (an RL agent, a GAN) overrides :meth:`Task.fit`
instead of data / model / loader and keeps the rest of the cycle.

Run folders (config.yaml, results.json, checkpoints, resume) are handled once, in
:mod:`contrastkit.runs`; the CLI finds a task by its name through :func:`get_task`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from torch import nn

from contrastkit.errors import UserError, check_choice

if TYPE_CHECKING:
    from contrastkit.config import Config
    from contrastkit.train import Trainer, TrainSummary

T = TypeVar("T", bound="type[Task]")
M = TypeVar("M")
Callback = Callable[[int, dict[str, float]], None]


@dataclass
class RunContext:
    """What every step of a training run may need: the config, the run folder, the device and
    the process's place under torchrun."""

    cfg: Config
    run_dir: Path
    device: torch.device
    rank: int = 0
    world_size: int = 1
    resume: bool = False
    verbose: bool = True
    state: dict[str, Any] = field(default_factory=dict)  # what a task keeps between its steps

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def local_batch(self) -> int:
        return self.cfg.train.batch_size // self.world_size

    def log(self, message: str) -> None:
        if self.verbose and self.is_main:
            print(message, flush=True)


class Task:
    """Base of every task: override the steps; the defaults say what is optional."""

    name: ClassVar[str] = ""
    sections: ClassVar[dict[str, type]] = {}  # config sections of this task: key → dataclass
    default_method: ClassVar[str] = ""
    unit: ClassVar[str] = "samples"  # what the training throughput counts
    query_modalities: ClassVar[tuple[str, ...]] = ()  # what encode_query takes: "text", "image"

    # ---------------------------------------------------------------- 1. validate

    def validate(self, cfg: Config) -> None:
        """Rules across sections (each field is already checked against its declaration)."""

    # ---------------------------------------------------------------- 2-4. data, model, loader

    def data(self, ctx: RunContext) -> Any:
        """Load (and for a new run, prepare and save into the run folder) the training data."""
        raise NotImplementedError

    def model(self, ctx: RunContext, data: Any) -> nn.Module:
        """The configured method around the task's encoders (on the CPU; the trainer moves it)."""
        raise NotImplementedError

    def loader(self, ctx: RunContext, data: Any, model: nn.Module) -> Any:
        """Batches for ``model.training_step``: ``len()``, ``batch_size``, ``batches(epoch,
        start)``, ``state_dict()`` / ``load_state_dict()`` (see data/image/loader.py)."""
        raise NotImplementedError

    def callbacks(self, ctx: RunContext, trainer: Trainer, data: Any, model: nn.Module) -> list[Callback]:
        """Extra per-step callbacks (e.g. early stopping); loaded again on resume by the task."""
        return []

    def fit(self, ctx: RunContext) -> tuple[TrainSummary, dict[str, Any]] | None:
        """Training that is not batches through the :class:`~contrastkit.train.Trainer` (an
        agent acting in an environment, a generator and a discriminator taking turns): run it
        here, from ``ctx`` (``ctx.resume`` set: continue from the run folder's checkpoint), and
        return the summary and extra results.json entries. ``None``, the default, means the
        standard path (data → model → loader → Trainer.fit → after_training)."""
        return None

    def describe(self, ctx: RunContext, data: Any) -> str:
        """One line: what is trained on what (printed before training)."""
        return f"training {ctx.cfg.method.name} on {ctx.device}"

    def after_training(self, ctx: RunContext, data: Any, model: nn.Module, summary: TrainSummary) -> dict[str, Any]:
        """Save the trained artifacts (rank 0 only) and return extra entries for results.json."""
        return {}

    # ---------------------------------------------------------------- 5. evaluate

    def evaluate(self, run_dir: Path, cfg: Config, *, verbose: bool = True) -> dict[str, Any]:
        """Evaluate the run's trained model; the result becomes results.json's ``eval``."""
        raise UserError(f"task {self.name!r} has no evaluation")

    def results_table(self, ev: dict[str, Any]) -> str:
        """The evaluation for the terminal: a title line and a small fixed-width table."""
        return "(no evaluation table)"

    def compare_row(self, results: dict[str, Any]) -> dict[str, Any]:
        """The run's headline figures for ``contrastkit compare`` (column name → number or
        text), from its results.json; every run of one comparison is of the same task."""
        return {}

    # ---------------------------------------------------------------- 6. embed

    def embed(self, run_dir: Path, cfg: Config, spec: str | None, out: Path, *, batch_size: int) -> tuple[int, int]:
        """Write embeddings of the data ``spec`` (None: the task's default) to ``out``."""
        raise UserError(f"task {self.name!r} cannot export embeddings")

    # ---------------------------------------------------------------- 7. summary

    def headline(self, results: dict[str, Any]) -> str:
        """The line `contrastkit train` prints about training."""
        tr = results.get("train", {})
        return (
            f"trained {tr.get('steps')} steps ({tr.get('epochs_done', 0):.1f} epochs) in "
            f"{tr.get('seconds', 0):.0f}s, {tr.get('images_per_sec', 0):.0f} {self.unit}/s, final loss "
            f"{tr.get('final_loss', float('nan')):.4f}"
        )


# ----------------------------------------------------------------------------- registry

_TASKS: dict[str, Task] = {}


def register_task(cls: T) -> T:
    """Class decorator: register a task under its ``name``."""
    if not cls.name:
        raise ValueError(f"task class {cls.__name__} has no name")
    if cls.name in _TASKS:
        raise ValueError(f"task {cls.name!r} is registered twice")
    _TASKS[cls.name] = cls()
    return cls


def unregister_task(name: str) -> None:
    """Forget a registered task (tests that register their own)."""
    _TASKS.pop(name, None)


def _load_builtin() -> None:
    import contrastkit.tasks  # noqa: F401  (imports the built-in tasks: they register)


def all_tasks() -> list[Task]:
    _load_builtin()
    return list(_TASKS.values())


def task_names() -> list[str]:
    return [t.name for t in all_tasks()]


def get_task(name: str) -> Task:
    """The registered task ``name``; a one-line error listing the tasks there are."""
    _load_builtin()
    check_choice("task", name, list(_TASKS))
    return _TASKS[name]


def capable(cfg: Config, capability: str, command: str) -> Any:
    """The run's task if it offers ``capability`` (a method such as ``recommend``), else a
    one-line error naming the tasks that do."""
    task = get_task(cfg.task)
    if getattr(task, capability, None) is None:
        able = [t.name for t in all_tasks() if getattr(t, capability, None) is not None]
        raise UserError(
            f"contrastkit {command} works on runs of task {' / '.join(able) or 'none'}; "
            f"this run's task is {cfg.task!r}"
        )
    return task


# ----------------------------------------------------------------------------- query models

# files whose change means new weights (the cache below then builds the model again)
_WEIGHT_FILES = ("config.yaml", "checkpoints/last.pt", "encoder.safetensors", "text_encoder")
_QUERY_MODELS: OrderedDict[tuple[str, str, tuple[int, ...]], Any] = OrderedDict()


def for_queries(run_dir: Path, what: str, build: Callable[[], M], *, keep: int = 4) -> M:
    """``build()`` once per run folder, ``what`` and state of the run's saved weights: a server
    answering many queries (``contrastkit serve``) or a script searching in a loop loads the
    model once; weights written since (a resumed run) are picked up. The ``keep`` most recent
    models stay in memory."""
    folder = Path(run_dir).resolve()
    stamps = tuple(p.stat().st_mtime_ns for p in (folder / name for name in _WEIGHT_FILES) if p.exists())
    key = (str(folder), what, stamps)
    if key in _QUERY_MODELS:
        _QUERY_MODELS.move_to_end(key)
    else:
        _QUERY_MODELS[key] = build()
        while len(_QUERY_MODELS) > keep:
            _QUERY_MODELS.popitem(last=False)
    model: M = _QUERY_MODELS[key]
    return model
