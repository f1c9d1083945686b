"""Tasks: one module per application, all on one small protocol (:mod:`contrastkit.tasks.base`).

Built in: ``image`` (image.py), ``text`` and ``image_text`` (text.py, image_text.py), ``gan``
(gan.py), ``recsys`` (recsys.py), ``sequences`` (sequences.py: word2vec, item2vec), ``rl`` (rl.py:
agents from pixels). Adding a task: one module with a :class:`Task` subclass decorated with
:func:`register_task`, and its import line below. No task module imports another.
"""

from __future__ import annotations

from contrastkit.tasks.base import (
    Acts,
    AnswersAnalogies,
    AnswersQueries,
    BrowsesImages,
    EmbedsItems,
    EncodesImages,
    EncodesTexts,
    FindsSimilar,
    HasKeyedVectors,
    ImageInput,
    MinesNegatives,
    Recommends,
    RunContext,
    Task,
    TrainedRun,
    ValidationSpec,
    lookup_task,
    register_task,
    registered_tasks,
    require,
    unregister_task,
)

# isort: split
from contrastkit.tasks import image, image_text, recsys, rl, sequences, text  # noqa: F401  (they register)

# isort: split
from contrastkit.tasks import gan  # noqa: F401  (registers after the others: the order names a section's owners)


def get_task(name: str) -> type[Task]:
    """The registered task ``name``; a one-line error listing the tasks there are."""
    return lookup_task(name)


def all_tasks() -> list[type[Task]]:
    return registered_tasks()


def task_names() -> list[str]:
    return [t.name for t in registered_tasks()]


def capable(run: TrainedRun, capability: type, command: str) -> TrainedRun:
    """``run`` if it offers ``capability`` (a protocol of :mod:`contrastkit.tasks.base`), else a
    one-line error naming the tasks whose runs do."""
    checked: TrainedRun = require(run, capability, command, registered_tasks())
    return checked


__all__ = [
    "Acts",
    "AnswersAnalogies",
    "AnswersQueries",
    "BrowsesImages",
    "EmbedsItems",
    "EncodesImages",
    "EncodesTexts",
    "FindsSimilar",
    "HasKeyedVectors",
    "ImageInput",
    "MinesNegatives",
    "Recommends",
    "RunContext",
    "Task",
    "TrainedRun",
    "ValidationSpec",
    "all_tasks",
    "capable",
    "get_task",
    "register_task",
    "task_names",
    "unregister_task",
]
