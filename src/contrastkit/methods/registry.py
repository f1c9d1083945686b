"""The method registry: every method declares its options dataclass and registers itself.

A method is one file in ``methods/``: an options dataclass (its knobs, defaults and help) and an
``nn.Module`` with ``training_step(batch) -> StepOutput``, registered with::

    @register_method("simclr", options=SimCLROptions, tasks=("image",),
                     paper="Chen et al. 2020, arXiv:2002.05709")
    class SimCLR(TwoViewMethod): ...

plus its import line in ``methods/__init__.py``. The task that trains it calls
``spec.build(options, **parts)`` with the parts that task provides (image: ``encoder``,
``feature_dim``, ``head``; text: ``encoder``, ``pad_token_id``; image–text: ``image_encoder``,
``text_encoder``; recsys: ``n_users``, ``n_items``, ``train_pairs``, ``device``, ``seed``).
A recipe's ``method:`` section is validated against the chosen method's options, so the knob
of another method is an error, not a silent no-op.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from contrastkit.errors import UserError, check_choice
from contrastkit.options import build, check, names_of, option

T = TypeVar("T")
OptionsT = TypeVar("OptionsT")


@dataclass
class MethodOptions:
    """Options every method has: its registered name."""

    name: str = option("", "the method (`contrastkit methods` lists them)")


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: what builds it, what it accepts, where it comes from."""

    name: str
    options: type[MethodOptions]
    build: Callable[..., nn.Module]
    tasks: tuple[str, ...]
    paper: str
    summary: str
    uses_labels: bool = False
    multi_crop: bool = False  # the class's ``multi_crop``: takes more than two views, of several sizes

    def option_names(self) -> list[str]:
        return [n for n in names_of(self.options) if n != "name"]

    def make_options(self, data: dict[str, Any], prefix: str = "method") -> MethodOptions:
        """Options from a recipe's ``method:`` mapping (without ``name``), each key checked."""

        def unknown(key: str, allowed: list[str]) -> UserError:
            listed = ", ".join(self.option_names()) or "none"
            return UserError(
                f"{prefix}.{key} is not an option of {self.name}; its options are: {listed}"
            )

        opts: MethodOptions = build(self.options, {**data, "name": self.name}, f"{prefix}.", unknown=unknown)
        check(opts, prefix)
        return opts


_METHODS: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    *,
    options: type[MethodOptions],
    tasks: tuple[str, ...],
    paper: str,
    build: Callable[..., nn.Module] | None = None,
    uses_labels: bool = False,
    summary: str | None = None,
) -> Callable[[T], T]:
    """Class decorator registering a method under ``name``; ``build(options, **parts)``
    defaults to calling the class with ``options=`` and the task's parts; ``summary``
    defaults to the first line of the class docstring."""

    def decorate(cls: T) -> T:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        if not (dataclasses.is_dataclass(options) and issubclass(options, MethodOptions)):
            raise TypeError(f"options of method {name!r} must be a MethodOptions dataclass")
        doc = (getattr(cls, "__doc__", None) or "").strip().splitlines()
        _METHODS[name] = MethodSpec(
            name=name,
            options=options,
            build=build or (lambda opts, **parts: cls(options=opts, **parts)),  # type: ignore[operator]
            tasks=tasks,
            paper=paper,
            summary=summary or (doc[0] if doc else ""),
            uses_labels=uses_labels,
            multi_crop=bool(getattr(cls, "multi_crop", False)),
        )
        return cls

    return decorate


def unregister_method(name: str) -> None:
    """Forget a registered method (tests that register their own)."""
    _METHODS.pop(name, None)


def _load_builtin() -> None:
    import contrastkit.methods  # noqa: F401  (imports every built-in method: they register)


def all_methods() -> list[MethodSpec]:
    _load_builtin()
    return list(_METHODS.values())


def methods_of_task(task: str) -> list[str]:
    return [m.name for m in all_methods() if task in m.tasks]


def get_method(name: str, task: str | None = None) -> MethodSpec:
    """The registered method ``name`` (of ``task`` when given); one-line error listing the
    methods there are."""
    _load_builtin()
    allowed = list(_METHODS) if task is None else methods_of_task(task)
    if task is not None and name in _METHODS and name not in allowed:
        raise UserError(
            f"method.name {name!r} is a method of task {' / '.join(_METHODS[name].tasks)}, not of "
            f"task {task}; its methods: {', '.join(sorted(allowed))}"
        )
    check_choice("method.name", name, allowed)
    return _METHODS[name]


def resolve_options(options_cls: type[OptionsT], options: OptionsT | None, overrides: dict[str, Any], owner: str) -> OptionsT:
    """``options`` (or the defaults) with keyword ``overrides`` applied and every value checked;
    a keyword the options do not have is a one-line error listing those they do."""
    names = names_of(options_cls)
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        listed = ", ".join(n for n in names if n != "name")
        raise UserError(f"{owner} has no option {', '.join(unknown)}; its options are: {listed}")
    opts = options if options is not None else options_cls()
    if overrides:
        opts = dataclasses.replace(opts, **overrides)  # type: ignore[type-var]
    check(opts, owner)
    return opts
