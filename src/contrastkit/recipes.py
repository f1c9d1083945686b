"""Recipes: shipped YAML files or the user's, ``--set key=value`` overrides, and the config of a
run folder, turned into a validated :class:`~contrastkit.config.Config` with the task the
recipe names (found in the task registry; the schema itself, :mod:`contrastkit.config`, knows
no task).
"""

from __future__ import annotations

import dataclasses
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from contrastkit.config import (
    COMMON_SECTIONS,
    Config,
    build_config,
    merge,
    parse_overrides,
    read_yaml,
    section_classes,
)
from contrastkit.errors import UserError, closest
from contrastkit.methods.registry import get_method, methods_of_task
from contrastkit.runs import CONFIG_FILE
from contrastkit.tasks import Task, all_tasks, get_task

DEFAULT_RECIPE = "digits-simclr"


def section_owners() -> dict[str, list[str]]:
    """Each task-specific section name → the tasks that read it."""
    owners: dict[str, list[str]] = {}
    for task in all_tasks():
        for key in section_classes(task):
            owners.setdefault(key, []).append(task.name)
    return owners


def _task_of(data: dict[str, Any]) -> type[Task]:
    name = data.get("task", "image")
    if not isinstance(name, str):
        raise UserError(f"task: expected a string, got {name!r}")
    return get_task(name)


def section_keys() -> dict[str, set[str]]:
    """Each section name → every key some task reads in it."""
    keys: dict[str, set[str]] = {}
    for task in all_tasks():
        for key, cls in section_classes(task).items():
            keys.setdefault(key, set()).update(f.name for f in dataclasses.fields(cls))
    return keys


def config_from_dict(data: dict[str, Any], *, saved: bool = False) -> Config:
    """Build and validate a Config from a (possibly partial) nested dict; ``saved``: a run
    folder's config.yaml, perhaps written by an older contrastkit (see :func:`build_config`)."""
    if not isinstance(data, dict):
        raise UserError(f"a recipe must be a mapping of sections, got {type(data).__name__}")
    return build_config(data, _task_of(data), saved=saved, owners=section_owners(), known=section_keys())


def with_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A recipe dict with ``--set`` overrides merged in. When the overrides switch the task or
    ``method.name``, what the recipe set for the old one and the new one does not have (the
    old task's sections, the old method's options) is dropped, with one warning naming it:
    ``--set method.name=byol`` works on a SimCLR recipe, ``--set task=text`` on the default one."""
    data = dict(data)
    dropped: list[str] = []
    new_task = overrides.get("task")
    if isinstance(new_task, str) and new_task != data.get("task", "image"):
        target = get_task(new_task)
        keep = section_classes(target)
        owners = section_owners()
        for key in list(data):
            if (key in owners or key in COMMON_SECTIONS) and key not in keep:
                dropped.append(f"section {key}")
                del data[key]
            elif key in keep and isinstance(data[key], dict):  # a shared section: keys the new task reads
                fields = {f.name for f in dataclasses.fields(keep[key])} - set(target.unread.get(key, ()))
                gone = sorted(k for k in data[key] if k not in fields)
                dropped += [f"{key}.{k}" for k in gone]
                data[key] = {k: v for k, v in data[key].items() if k in fields}
    method_over = overrides.get("method")
    if not isinstance(method_over, dict):
        method_over = {}
    base_method = data.get("method")
    if isinstance(base_method, dict):
        task = get_task(str(new_task or data.get("task", "image")))
        new_name = method_over.get("name") or (
            base_method.get("name") if base_method.get("name") in methods_of_task(task.name) else task.default_method
        )
        if new_name != base_method.get("name"):
            try:
                known = set(get_method(str(new_name), task.name).option_names())
            except UserError:
                known = set(base_method)  # validation names the unknown method
            gone = sorted(k for k in base_method if k != "name" and k not in known)
            dropped += [f"method.{k}" for k in gone]
            data["method"] = {k: v for k, v in base_method.items() if k not in gone and k != "name"}
    if dropped:
        warnings.warn(
            f"the overrides change the task or method; dropped from the recipe: {', '.join(dropped)}",
            UserWarning,
            stacklevel=3,
        )
    return merge(data, overrides)


def recipe_names() -> list[str]:
    """Names of the recipes shipped with the package."""
    folder = resources.files("contrastkit") / "recipes"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _check_recipe_name(name: str, *, paths: bool = True) -> None:
    names = recipe_names()
    if name not in names:
        raise UserError(
            f"unknown recipe {name!r}{closest(name, names)}; shipped recipes: "
            f"{', '.join(names)}" + (" (or give a path to a .yaml file)" if paths else "")
        )


def recipe_text(name: str) -> str:
    """The YAML of a shipped recipe, comments included (UserError for an unknown name)."""
    _check_recipe_name(name, paths=False)
    return (resources.files("contrastkit") / "recipes" / f"{name}.yaml").read_text()


def recipe_rows() -> list[dict[str, str]]:
    """Each shipped recipe with its task, method, the data it trains on and the optional extra it
    needs ('' for none): what ``contrastkit recipes`` prints."""
    rows = []
    for name in recipe_names():
        cfg = load_config(name)
        data, extra = get_task(cfg.task).needs(cfg)
        rows.append({"name": name, "task": cfg.task, "method": cfg.method.name, "data": data, "extra": extra})
    return rows


def read_recipe(recipe: str) -> dict[str, Any]:
    """Read a recipe given as a shipped name (e.g. 'digits-simclr') or a YAML file path."""
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"recipe file {recipe!r} does not exist")
        return read_yaml(path, "recipe")
    _check_recipe_name(recipe)
    data = yaml.safe_load(recipe_text(recipe)) or {}
    if not isinstance(data, dict):
        raise UserError(f"recipe {recipe!r} must be a mapping of sections, got {type(data).__name__}")
    return data


def load_config(recipe: str | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Recipe (shipped name or path; None = the digits quickstart) plus overrides: ``--set``
    strings (``["train.epochs=3"]``) or a mapping of dotted keys (``{"train.epochs": 3}``)."""
    data = read_recipe(recipe or DEFAULT_RECIPE)
    return config_from_dict(with_overrides(data, parse_overrides(as_pairs(overrides))))


def as_pairs(overrides: list[str] | dict[str, Any] | None) -> list[str]:
    """Overrides as ``key=value`` strings (a mapping's values written as YAML)."""
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                for k, v in overrides.items()]
    return list(overrides)


def apply_overrides(cfg: Config, overrides: list[str] | dict[str, Any] | None) -> Config:
    """A validated copy of `cfg` with overrides applied."""
    pairs = as_pairs(overrides)
    if not pairs:
        return cfg
    return config_from_dict(with_overrides(cfg.to_dict(), parse_overrides(pairs)))


def read_run_config(run_dir: Path) -> Config:
    """The config a run was trained with (an older contrastkit's config.yaml is migrated)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} is not a contrastkit run folder (no {CONFIG_FILE})")
    data = read_yaml(path, "run config")
    return config_from_dict(data, saved=True)
