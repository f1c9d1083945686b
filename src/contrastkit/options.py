"""Typed option dataclasses: a knob is declared once — type, default, help, allowed values — and
YAML / ``--set`` parsing, one-line errors and the ``contrastkit methods`` listing follow from it.

Used by every config section, every method's options and every task's own section::

    @dataclass
    class SimCLROptions(ContrastOptions):
        queue_size: int = option(0, "past projections kept as extra negatives (0: none)", ge=0)

``build(cls, data, prefix)`` turns a (possibly partial) mapping into ``cls`` with types checked
and gently coerced; ``check(obj, prefix)`` enforces the declared bounds and choices, recursing
into nested option dataclasses, then calls ``obj.check_values(prefix)`` where a class needs a
rule across fields.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import MISSING, field
from typing import Any

from contrastkit.errors import UserError, check_choice, closest

Choices = Iterable[str] | Callable[[], Iterable[str]]


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    choices: Choices | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field with its help text and the values it allows (``choices`` may be a
    callable, for lists known only at run time; bounds apply to numbers and to each number of
    a list)."""
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def lazy_choices(module: str, name: str) -> Callable[[], list[str]]:
    """Choices read from ``module.name`` when first checked (registries that import heavy code)."""

    def read() -> list[str]:
        import importlib

        return list(getattr(importlib.import_module(module), name))

    return read


def names_of(cls: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


# ----------------------------------------------------------------------------- typing


def type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Check (and gently coerce: 3 → 3.0, 2.0 → 2) one value against a field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(key, value, arg)
            except UserError:
                pass
        allowed = " or ".join(type_name(a) for a in args)
        raise UserError(f"{key}: {value!r} is not a valid value; expected {allowed}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise UserError(f"{key}: expected a list, got {value!r}")
        return [coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UserError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise UserError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise UserError(f"{key}: expected a string, got {value!r}")
    raise UserError(f"{key}: unsupported type {tp}")  # pragma: no cover - programming error


def unknown_key(prefix: str, key: str, allowed: list[str]) -> UserError:
    """The error for a key that a section does not have."""
    where = prefix.rstrip(".") or "the top level"
    return UserError(
        f"unknown config key {prefix + key!r}{closest(str(key), allowed)}; allowed in {where}: "
        f"{', '.join(allowed)}"
    )


def build(
    cls: Any,
    data: Any,
    prefix: str,
    *,
    unknown: Callable[[str, list[str]], UserError] | None = None,
) -> Any:
    """``cls`` from a mapping, every key and type checked (nested dataclasses recursively);
    ``unknown(key, allowed)`` makes the error for a key ``cls`` does not have."""
    if not isinstance(data, dict):
        raise UserError(f"{prefix.rstrip('.') or 'recipe'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    declared = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in declared:
            raise (unknown or (lambda k, a: unknown_key(prefix, k, a)))(str(key), list(declared))
        tp = hints[key]
        full = f"{prefix}{key}"
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build(tp, value or {}, f"{full}.")
        else:
            kwargs[key] = coerce(full, value, tp)
            check_value(full, kwargs[key], dict(declared[key].metadata))
    return cls(**kwargs)


# ----------------------------------------------------------------------------- checking


def _bound_error(key: str, value: Any, meta: dict[str, Any]) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{key} must be a finite number, got {value!r}"
    for name, op, fails in (
        ("ge", ">=", lambda v, b: v < b),
        ("gt", ">", lambda v, b: v <= b),
        ("le", "<=", lambda v, b: v > b),
        ("lt", "<", lambda v, b: v >= b),
    ):
        bound = meta.get(name)
        if bound is not None and fails(value, bound):
            return f"{key} must be {op} {bound:g}, got {value!r}"
    return None


def check_value(key: str, value: Any, meta: dict[str, Any]) -> None:
    """Enforce one field's declared choices and bounds (one-line UserError naming ``key``)."""
    choices = meta.get("choices")
    if choices is not None and value is not None:
        allowed = list(choices() if callable(choices) else choices)
        for item in value if isinstance(value, list) else [value]:
            check_choice(key, item, allowed)
    values = value if isinstance(value, list) else [value]
    for item in values:
        problem = _bound_error(key, item, meta)
        if problem:
            raise UserError(problem)


def check(obj: Any, prefix: str) -> None:
    """Check every field of an option dataclass against its declaration, nested ones included,
    then the class's own cross-field rules (``check_values(prefix)``) where it has them."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check(value, key)
            continue
        coerce(key, value, hints[f.name])  # the type (values made by `build` pass already)
        check_value(key, value, dict(f.metadata))
    hook = getattr(obj, "check_values", None)
    if callable(hook):
        hook(prefix)


def describe(cls: Any) -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) of each field, nested option dataclasses flattened with dots."""
    rows: list[tuple[str, str, str, str]] = []
    hints = typing.get_type_hints(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(tp):
            rows += [(f"{f.name}.{n}", t, d, h) for n, t, d, h in describe(tp)]
            continue
        help_text = str(f.metadata.get("help", ""))
        choices = f.metadata.get("choices")
        if choices is not None:
            listed = list(choices() if callable(choices) else choices)
            help_text += f" ({' | '.join(listed)})"
        rows.append((f.name, type_name(tp).replace("NoneType", "None"), repr(value), help_text))
    return rows
