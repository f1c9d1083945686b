"""The run configuration's schema: typed sections built from nested mappings, with one-line
errors. It knows no task: the task a recipe names is passed in as a :class:`Schema` (the recipe
loader, :mod:`contrastkit.recipes`, finds it in the registry).

A config has ``name``, ``task``, a ``method`` section (validated against the chosen method's own
options, :mod:`contrastkit.methods.registry`) and the sections the task reads: the common
``optim``, ``train`` and ``eval`` (or the task's own version of one, e.g. the image task's
``eval`` with its probes) and its own (``data``, ``model``, ``text``, ``recsys``, ...). A task may
read only part of a common section (``unread``): a key the task does not read is a one-line
error naming the task, not a silent no-op, and it is left out of the run's config.yaml.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from contrastkit.errors import UserError
from contrastkit.methods.registry import MethodOptions, get_method
from contrastkit.options import build, check, option, unknown_key
from contrastkit.training.options import OptimConfig, TrainConfig


@dataclass
class EvalConfig:
    """Evaluation after training (every task; the image task adds its probes)."""

    enabled: bool = option(True, "evaluate after training")
    baselines: bool = option(True, "also evaluate the untrained network (and raw inputs)")
    plots: bool = option(True, "pictures of the evaluation in plots/")
    batch_size: int = option(512, "batch size of feature extraction", ge=1)
    report: bool = option(True, "write report.html into the run folder after training and evaluation")


COMMON_SECTIONS: dict[str, type] = {"optim": OptimConfig, "train": TrainConfig, "eval": EvalConfig}

# keys that have moved: old key → new key (a recipe using an old key gets an error naming the
# new one; the config.yaml of an older run folder is migrated silently)
MOVED: dict[str, str] = {
    "recsys.model": "method.name",
    "recsys.embedding_dim": "method.embedding_dim",
    "recsys.layers": "method.layers",
    "recsys.reg": "method.reg",
    "recsys.cl_weight": "method.cl_weight",
    "recsys.cl_temperature": "method.temperature",
    "recsys.noise_eps": "method.noise_eps",
    "recsys.cl_layer": "method.cl_layer",
    "recsys.sgl_augmentation": "method.augmentation",
    "recsys.sgl_drop_ratio": "method.drop_ratio",
    "text.gradcache_chunk": "method.gradcache_chunk",
    "text.embed_dim": "method.embed_dim",
    "text.learn_temperature": "method.learn_temperature",  # method.learn_scale for siglip
    "text.max_logit_scale": "method.max_logit_scale",
    "text.siglip_scale_init": "method.scale_init",
    "text.siglip_bias_init": "method.bias_init",
}


class Schema(Protocol):
    """What building a config needs of its task (a :class:`contrastkit.tasks.Task` class)."""

    name: str
    default_method: str
    sections: dict[str, type | None]
    unread: dict[str, tuple[str, ...]]

    def validate(self, cfg: Config) -> None: ...


def section_classes(task: Schema) -> dict[str, type]:
    """Every section the task reads besides ``method``: its own first, then the common ones
    (``None`` in the task's ``sections`` drops a common section)."""
    merged: dict[str, type | None] = {**{k: v for k, v in task.sections.items() if k not in COMMON_SECTIONS}}
    for key, cls in COMMON_SECTIONS.items():
        merged[key] = task.sections.get(key, cls)
    return {k: v for k, v in merged.items() if v is not None}


@dataclass
class Config:
    """A whole run: the task, the method and the sections the task reads.

    Sections are attributes: ``cfg.data`` is ``cfg.sections["data"]``. ``cfg.optim``,
    ``cfg.train`` and ``cfg.eval`` always exist (with their defaults where the task does not
    read them); ``unread`` lists, per section, the keys the task does not read.
    """

    name: str = "run"
    task: str = "image"
    method: MethodOptions = field(default_factory=MethodOptions)
    sections: dict[str, Any] = field(default_factory=dict)
    unread: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections") or {}
        if name in sections:
            return sections[name]
        if name in COMMON_SECTIONS:  # a common section the task does not read: its defaults
            sections[name] = COMMON_SECTIONS[name]()
            self.__dict__.setdefault("_defaulted", set()).add(name)
            return sections[name]
        raise AttributeError(
            f"config of task {self.__dict__.get('task')!r} has no section {name!r}"
            f" (its sections: {', '.join(sections) or 'none'})"
        )

    @property
    def optim(self) -> OptimConfig:
        section: OptimConfig = self.__getattr__("optim")
        return section

    @property
    def train(self) -> TrainConfig:
        section: TrainConfig = self.__getattr__("train")
        return section

    @property
    def eval(self) -> Any:
        section: Any = self.__getattr__("eval")  # the task's own version of it, where it has one
        return section

    def to_dict(self) -> dict[str, Any]:
        """The config as nested mappings (what config.yaml holds): the sections the task reads,
        without the keys it does not read."""
        defaulted = self.__dict__.get("_defaulted", set())
        out: dict[str, Any] = {"name": self.name, "task": self.task}
        own = [k for k in self.sections if k not in COMMON_SECTIONS and k not in defaulted]
        for key in (*own, "method", *COMMON_SECTIONS):
            if key == "method":
                out["method"] = dataclasses.asdict(self.method)
            elif key in self.sections and key not in defaulted:
                skip = set(self.unread.get(key, ()))
                out[key] = {k: v for k, v in dataclasses.asdict(self.sections[key]).items() if k not in skip}
        return out


# ----------------------------------------------------------------------------- building


def _moved(data: dict[str, Any], saved: bool, sections: Any) -> dict[str, Any]:
    """Keys that moved: an error naming the new key, or (saved run folders) moved silently
    (from the task's own ``sections``; the others are dropped with their sections)."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}

    def present(old: str) -> bool:
        section, key = old.split(".")
        node = data.get(section)
        return isinstance(node, dict) and key in node and (not saved or section in sections)

    moved = [old for old in MOVED if present(old)]
    if moved and not saved:
        old = moved[0]
        raise UserError(f"{old} has moved: use {MOVED[old]} (see `contrastkit methods` for each method's options)")
    if "recsys.model" in moved:  # the method section of an older recsys run was unused
        data["method"] = {}
    method = data.setdefault("method", {})
    for old in moved:
        section, key = old.split(".")
        value = data[section].pop(key)
        new = MOVED[old].split(".", 1)[1]
        if new == "learn_temperature" and isinstance(method, dict) and method.get("name") == "siglip":
            new = "learn_scale"
        if isinstance(method, dict):
            method[new] = value
    return data


def build_config(
    data: dict[str, Any], task: Schema, *, saved: bool = False, owners: dict[str, list[str]] | None = None,
    known: dict[str, set[str]] | None = None,
) -> Config:
    """Build and validate the config of ``task`` from a (possibly partial) nested mapping.
    ``saved``: the mapping is a run folder's config.yaml, perhaps written by an older
    contrastkit (moved keys are migrated; sections, keys and method options the task or method
    does not read are dropped). ``owners``: section name → the tasks that read it (for the
    error naming the task a misplaced section belongs to); ``known``: section name → every key
    some task reads in it (a key another task reads is "not read by this task", not unknown)."""
    classes = section_classes(task)
    data = _moved(data, saved, classes)
    allowed = ["name", "task", *[k for k in classes if k not in COMMON_SECTIONS], "method",
               *[k for k in COMMON_SECTIONS if k in classes]]
    for key in list(data):
        if key in allowed:
            continue
        belongs = (owners or {}).get(str(key), [])
        if saved and (belongs or key in COMMON_SECTIONS):
            data.pop(key)
        elif key in COMMON_SECTIONS:
            raise UserError(
                f"section {key!r} is not read by task {task.name!r} (its sections: {', '.join(allowed[2:])})"
            )
        elif belongs:
            raise UserError(
                f"section {key!r} belongs to task {' / '.join(belongs)}; this recipe's task is "
                f"{task.name!r} (its sections: {', '.join(allowed[2:])})"
            )
        else:
            raise unknown_key("", str(key), allowed)
    name = data.get("name", "run")
    if not isinstance(name, str):
        raise UserError(f"name: expected a string, got {name!r}")
    method = _method_options(task, data.get("method") or {}, saved)
    sections: dict[str, Any] = {}
    for key, cls in classes.items():
        values = data.get(key) or {}
        if not isinstance(values, dict):
            raise UserError(f"{key}: expected a mapping of keys, got {values!r}")
        read = [f.name for f in dataclasses.fields(cls) if f.name not in task.unread.get(key, ())]
        if saved:  # an older run folder may hold keys this task no longer reads (or never did)
            values = {k: v for k, v in values.items() if k in read}
        others = (known or {}).get(key, set())
        bad = next((k for k in values if k not in read and (k in others or k in task.unread.get(key, ()))), None)
        if bad is not None:
            raise UserError(
                f"{key}.{bad} is not read by task {task.name!r}; the {key} keys it reads: {', '.join(read)}"
            )
        sections[key] = build(cls, values, f"{key}.")
    cfg = Config(name=name, task=task.name, method=method, sections=sections,
                 unread={k: tuple(v) for k, v in task.unread.items()})
    for key, value in sections.items():
        check(value, key)
    task.validate(cfg)
    return cfg


def _method_options(task: Schema, data: Any, saved: bool) -> MethodOptions:
    if not isinstance(data, dict):
        raise UserError(f"method: expected a mapping of keys, got {data!r}")
    values = dict(data)
    name = values.pop("name", None) or task.default_method
    if not isinstance(name, str):
        raise UserError(f"method.name: expected a string, got {name!r}")
    spec = get_method(name, task.name)
    if saved:  # an older run folder's config may hold the knobs of other methods
        known = set(spec.option_names())
        values = {k: v for k, v in values.items() if k in known}
    return spec.make_options(values)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ['train.epochs=3', 'data.name=fashion-mnist'] into a nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise UserError(f"--set expects key=value, got {pair!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {key}: {part!r} is not a section")
        node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], update: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Recursive dict merge; `update` wins. Into a list of mappings (e.g. ``data.augment``), a
    key addresses one entry by its position (``data.augment.2.brightness``) or by its ``op``
    where one entry has it (``data.augment.color_jitter.brightness``)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, f"{where}{key}.")
        elif isinstance(value, dict) and isinstance(out.get(key), list) and value:
            out[key] = _merge_into_list(out[key], value, f"{where}{key}")
        else:
            out[key] = value
    return out


def _merge_into_list(items: list[Any], update: dict[str, Any], where: str) -> list[Any]:
    items = list(items)
    for key, value in update.items():
        ops = [i for i, item in enumerate(items) if isinstance(item, dict) and item.get("op") == key]
        if str(key).isdigit() and int(key) < len(items):
            index = int(key)
        elif len(ops) == 1:
            index = ops[0]
        else:
            named = sorted({str(item["op"]) for item in items if isinstance(item, dict) and "op" in item})
            how = "more than one entry has that op; use its position" if ops else (
                f"use a position 0..{len(items) - 1}" + (f" or an op: {', '.join(named)}" if named else ""))
            raise UserError(f"--set {where}.{key}: {where} has no single entry {key!r}; {how}")
        current = items[index]
        items[index] = merge(current, value, f"{where}.{key}.") if isinstance(current, dict) and isinstance(value, dict) \
            else value
    return items


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True))


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    """A YAML mapping from ``path``; one-line errors naming ``what`` the file is."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise UserError(f"{what} {str(path)!r} is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {str(path)!r} must be a mapping of sections, got {type(data).__name__}")
    return data

