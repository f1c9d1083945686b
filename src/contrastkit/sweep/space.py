"""The search space of a sweep: ``KEY=SPEC`` items, each an option of the recipe's config and the
values a trial may give it.

SPEC is ``low:high`` (a float drawn uniformly), ``low:high:log`` (a float drawn on a log scale),
``int:low:high`` (an integer, both ends included) or ``a,b,c`` (one of the values, each read like
a ``--set`` value: ``0.1``, ``true``, ``adamw``). Optuna's distributions do the drawing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml

from contrastkit.errors import UserError

FORMS = "low:high, low:high:log, int:low:high or a,b,c"


@dataclass(frozen=True)
class Param:
    """One option of the space: ``kind`` "float", "int" or "categorical"."""

    key: str
    kind: str
    spec: str  # as the user wrote it
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def distribution(self) -> Any:
        """Optuna's distribution of this option."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "float":
            return FloatDistribution(float(self.low), float(self.high), log=self.log)  # type: ignore[arg-type]
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high))  # type: ignore[arg-type]
        return CategoricalDistribution(self.choices)

    def extremes(self) -> tuple[Any, ...]:
        """The values that bound this option: both ends of a range (and a float inside it, not a
        whole number: an integer option needs int:low:high), every value of a list."""
        if self.kind == "categorical":
            return self.choices
        if self.kind == "int":
            return (self.low, self.high)
        low, high = float(self.low), float(self.high)  # type: ignore[arg-type]
        inside = low + (high - low) / math.pi
        return (self.low, self.high, inside if inside != round(inside) else (inside + high) / 2)

    def grid(self) -> list[Any] | None:
        """Every value a grid visits (None for a continuous range)."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1))  # type: ignore[arg-type]
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "spec": self.spec, "kind": self.kind, "low": self.low, "high": self.high,
                "log": self.log, "choices": list(self.choices)}


def _number(text: str, item: str, integer: bool = False) -> float | int:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if integer:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"--space {item}: {text!r} is not an integer (SPEC is {FORMS})")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"--space {item}: {text!r} is not a number (SPEC is {FORMS})")
    return float(value)


def parse_param(item: str) -> Param:
    """One ``KEY=SPEC`` item (a one-line UserError when it is malformed)."""
    if "=" not in item:
        raise UserError(f"--space expects KEY=SPEC, got {item!r} (SPEC is {FORMS})")
    key, spec = (s.strip() for s in item.split("=", 1))
    if not key or not spec:
        raise UserError(f"--space expects KEY=SPEC, got {item!r} (SPEC is {FORMS})")
    if "," in spec:
        texts = [t.strip() for t in spec.split(",")]
        if any(not t for t in texts):
            raise UserError(f"--space {item}: an empty value in the list (SPEC is {FORMS})")
        values: list[Any] = []
        for text in texts:
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                value = text
            if value is not None and not isinstance(value, str | int | float | bool):
                raise UserError(f"--space {item}: {text!r} is not a single value (numbers, words, true / false)")
            values.append(value)
        if len(set(map(repr, values))) < len(values):
            raise UserError(f"--space {item}: a value is listed twice")
        return Param(key, "categorical", spec, choices=tuple(values))
    parts = spec.split(":")
    if parts[0] == "int":
        if len(parts) != 3:
            raise UserError(f"--space {item}: expected int:low:high (SPEC is {FORMS})")
        low, high = _number(parts[1], item, integer=True), _number(parts[2], item, integer=True)
        if not low < high:
            raise UserError(f"--space {item}: low {low} must be below high {high}")
        return Param(key, "int", spec, low=low, high=high)
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
        raise UserError(f"--space {item}: expected {FORMS}")
    low, high = _number(parts[0], item), _number(parts[1], item)
    log = len(parts) == 3
    if not low < high:
        raise UserError(f"--space {item}: low {low:g} must be below high {high:g}")
    if log and low <= 0:
        raise UserError(f"--space {item}: a log range needs low > 0, got {low:g}")
    return Param(key, "float", spec, low=low, high=high, log=log)


def parse_space(items: list[str] | dict[str, str]) -> list[Param]:
    """The space from ``KEY=SPEC`` items (or a mapping KEY → SPEC); a one-line UserError for an
    empty space, a malformed SPEC or a key given twice."""
    if isinstance(items, dict):
        items = [f"{k}={v}" for k, v in items.items()]
    if not items:
        raise UserError(f"the search space is empty: give at least one --space KEY=SPEC (SPEC is {FORMS})")
    params = [parse_param(i) for i in items]
    keys = [p.key for p in params]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise UserError(f"--space names {', '.join(twice)} more than once")
    return params


def as_set(key: str, value: Any) -> str:
    """A drawn value as a ``--set`` override (a string written so that it reads back as itself)."""
    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    return f"{key}={text}"
