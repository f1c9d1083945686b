"""Tasks: one module per application, all on one small protocol (:mod:`contrastkit.tasks.base`).

Built in: ``image`` (image.py), ``text`` and ``image_text`` (text.py, image_text.py), ``gan`` (gan.py), ``recsys``
(recsys.py), ``sequences`` (sequences.py: word2vec, item2vec), ``rl`` (rl.py: agents from
pixels). Adding a task: one module with a
:class:`Task` subclass decorated with :func:`register_task`, and its import line below.
"""

from __future__ import annotations

from contrastkit.tasks import image, image_text, recsys, rl, sequences, text  # noqa: F401  (they register)

# isort: split
from contrastkit.tasks import gan  # noqa: F401  (registers after the others: the order names a section's owners)
from contrastkit.tasks.base import (
    RunContext,
    Task,
    all_tasks,
    capable,
    get_task,
    register_task,
    task_names,
    unregister_task,
)

__all__ = [
    "RunContext",
    "Task",
    "all_tasks",
    "capable",
    "get_task",
    "register_task",
    "task_names",
    "unregister_task",
]
