"""Hyper-parameter search on the task's validation data, never on the test split:
``contrastkit sweep RECIPE --space KEY=SPEC ... --trials N --out DIR`` and :func:`sweep`.

Optuna draws the values (TPE, random or grid), prunes bad trials from the intermediate values of
the run's validation curve (median or Hyperband) and keeps the study in SQLite in the sweep folder
(or in the database ``--storage`` names, for several workers). Each trial is an ordinary run
folder; the best configuration becomes a recipe, trained and tested once against the recipe's
default. ``space.py``: the SPEC forms; ``plan.py``: the checked arguments (sweep.json);
``study.py``: the study, its workers, trials and pruning; ``report.py``: the end.
"""

from __future__ import annotations

from contrastkit.sweep.run import sweep

__all__ = ["sweep"]
