"""What a sweep is, checked before any trial starts and kept in ``DIR/sweep.json``: the recipe and
its ``--set`` overrides, the space, the trial count, the metric and its direction (the task's
validation), the sampler, the pruner, the budget — and the overrides each trial and each final
run is built from.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from contrastkit.config import Config
from contrastkit.errors import UserError, check_choice
from contrastkit.recipes import load_config
from contrastkit.sweep.space import FORMS, Param, as_set, parse_space
from contrastkit.tasks import get_task

SPEC_FILE = "sweep.json"
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")


@dataclass
class Plan:
    """A sweep's arguments, checked (:func:`make_plan`), as sweep.json records them."""

    recipe: str
    space: list[str]  # KEY=SPEC items
    trials: int
    metric: str
    direction: str
    task: str
    sets: list[str] = field(default_factory=list)
    sampler: str = "tpe"
    pruner: str = "median"
    budget_minutes: float | None = None
    validate_every: int | None = None
    seed: int = 0
    storage: str | None = None  # None: DIR/study.db (SQLite)
    study: str = "sweep"
    validation_sets: list[str] = field(default_factory=list)  # the task's validation, switched on
    budget_sets: list[str] = field(default_factory=list)

    def params(self) -> list[Param]:
        return parse_space(self.space)

    def distributions(self) -> dict[str, Any]:
        return {p.key: p.distribution() for p in self.params()}

    def trial_overrides(self, values: dict[str, Any]) -> list[str]:
        """A trial's overrides: the user's, the budget's, the validation's, then the drawn values."""
        return [*self.sets, *self.budget_sets, *self.validation_sets, *(as_set(k, v) for k, v in values.items())]

    def final_overrides(self, values: dict[str, Any]) -> list[str]:
        """A final run's overrides (the chosen values, or none for the default): no validation
        settings, so it trains on the whole training split."""
        return [*self.sets, *self.budget_sets, *(as_set(k, v) for k, v in values.items())]

    def trial_config(self, values: dict[str, Any]) -> Config:
        return load_config(self.recipe, self.trial_overrides(values))

    def storage_url(self, out: Path) -> str:
        return self.storage or f"sqlite:///{(Path(out) / 'study.db').resolve()}"

    def to_dict(self) -> dict[str, Any]:
        """As sweep.json records it (a database password hidden: workers pass --storage)."""
        data = {**asdict(self), "params": [p.to_dict() for p in self.params()]}
        if self.storage and "@" in self.storage:
            from sqlalchemy.engine import make_url

            data["storage"] = make_url(self.storage).render_as_string(hide_password=True)
        return data


def read_plan(out: Path, flag: str) -> tuple[Plan, dict[str, Any]]:
    """The plan of the sweep in ``out`` and all of sweep.json (a one-line error naming ``flag``
    when there is none)."""
    path = Path(out) / SPEC_FILE
    if not path.is_file():
        raise UserError(f"{flag}: no sweep in {str(out)!r} (no {SPEC_FILE}); start one without {flag}")
    try:
        data = json.loads(path.read_text())
        names = set(Plan.__dataclass_fields__)
        return Plan(**{k: v for k, v in data.items() if k in names}), data
    except (ValueError, TypeError) as exc:
        raise UserError(f"{path} is not a sweep spec file ({exc})") from None


def write_plan(out: Path, plan: Plan, extra: dict[str, Any] | None = None) -> None:
    path = Path(out) / SPEC_FILE
    tmp = path.with_name(f".{SPEC_FILE}.tmp")
    tmp.write_text(json.dumps({**plan.to_dict(), **(extra or {})}, indent=2))
    tmp.replace(path)


def make_plan(
    recipe: str, space: list[str] | dict[str, str], *, trials: int, sets: list[str] | None = None,
    metric: str | None = None, sampler: str = "tpe", pruner: str = "median", budget_minutes: float | None = None,
    validate_every: int | None = None, seed: int = 0, storage: str | None = None, study: str = "sweep",
) -> Plan:
    """Check every argument and every bound of the space against the recipe's config (built with
    each end of each range: the options' own checks speak); one-line UserErrors, nothing written."""
    if trials < 1:
        raise UserError(f"--trials must be >= 1, got {trials}")
    check_choice("--sampler", sampler, SAMPLERS)
    check_choice("--pruner", pruner, PRUNERS)
    if budget_minutes is not None and not budget_minutes > 0:
        raise UserError(f"--budget-minutes must be > 0, got {budget_minutes}")
    if validate_every is not None and validate_every < 1:
        raise UserError(f"--validate-every must be >= 1, got {validate_every}")
    params = parse_space(space)
    items = [f"{p.key}={p.spec}" for p in params]
    sets = list(sets or [])
    base = load_config(recipe, sets)
    task = get_task(base.task)
    spec = task.validation(base)
    if metric is not None and metric != spec.metric:
        raise UserError(f"--metric {metric!r}: task {task.name} validates this recipe with {spec.metric!r} only")
    validation_sets = list(spec.overrides)
    if validate_every is not None:
        if spec.every is None:
            raise UserError(f"--validate-every: task {task.name} measures its validation at the end of a run only")
        validation_sets.append(f"{spec.every}={validate_every}")
    budget_sets: list[str] = []
    if budget_minutes is not None:
        budget_sets.append(f"train.time_budget_minutes={budget_minutes}")
        if "epochs" not in task.unread.get("train", ()):  # long enough to fill the budget (as compare does)
            budget_sets.append("train.epochs=100000")
    plan = Plan(recipe=recipe, space=items, trials=trials, metric=spec.metric, direction=spec.direction, task=task.name,
                sets=sets, sampler=sampler, pruner=pruner, budget_minutes=budget_minutes, validate_every=validate_every,
                seed=seed, storage=storage, study=study, validation_sets=validation_sets, budget_sets=budget_sets)
    plan.trial_config({})  # the sweep's own settings on the recipe
    for p in params:
        for value in p.extremes():
            try:
                plan.trial_config({p.key: value})
            except UserError as exc:
                hint = " (an integer option: use int:low:high)" if p.kind == "float" and "integer" in str(exc) else ""
                raise UserError(f"--space {p.key}={p.spec}: {exc}{hint}") from None
    if sampler == "grid":
        continuous = [f"{p.key}={p.spec}" for p in params if p.grid() is None]
        if continuous:
            raise UserError(f"--sampler grid needs int:low:high or a,b,c values; {', '.join(continuous)} is a "
                            f"continuous range (SPEC is {FORMS})")
    return plan
