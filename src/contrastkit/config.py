"""Typed run configuration: dataclasses loaded from YAML recipes, with ``key=value`` overrides.

A recipe has the common sections ``method``, ``optim``, ``train`` and ``eval``, plus the
sections its ``task`` declares (image: ``data`` and ``model``; image_text: those and ``text``;
text: ``text``; recsys: ``recsys`` — see :mod:`contrastkit.tasks`). The ``method`` section is
validated against the chosen method's own options (:mod:`contrastkit.methods.registry`).
Every key is checked: unknown keys get the closest valid name suggested, wrong types and
out-of-range values a one-line ``UserError`` naming the value and what is allowed; a key that
has moved names its new place.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from contrastkit.errors import UserError, check_choice, closest
from contrastkit.methods.base import HeadOptions
from contrastkit.methods.registry import MethodOptions, get_method, methods_of_task
from contrastkit.negatives.mining import NegativeSampling
from contrastkit.options import build, check, lazy_choices, option, unknown_key
from contrastkit.train.options import OptimConfig, TrainConfig

NegativesConfig = NegativeSampling  # the ``method.negatives`` section of the InfoNCE methods


@dataclass
class DataConfig:
    """Which images to learn from and how to augment them (tasks image and image_text)."""

    name: str = option("digits", "data set", choices=lazy_choices("contrastkit.data.image", "DATASETS"))
    root: str | None = option(None, "folder of the data set's files (default: found or downloaded)")
    download: bool = option(False, "download the data set where a network exists")
    image_size: int | None = option(None, "resize images to this side (default: the data's)", ge=1)
    augment: list[dict[str, Any]] | None = option(None, "augmentation ops (default: per data set)")
    views: int = option(2, "augmented views of each image per step", ge=2)
    label_fraction: float = option(
        1.0, "SupCon / semi-supervised: share of training labels used (per class, seeded)", gt=0, le=1
    )
    train_classes: list[int] | None = option(
        None, "pre-train on the images of these classes only (novel-class few-shot: eval.episode_classes=novel)", ge=0
    )
    stream: bool = option(
        False, "folder data: decode batches from the files while training instead of loading all first"
    )
    workers: int = option(2, "data.stream: DataLoader worker processes decoding batches (0: in the training process)", ge=0)
    gpu_decode: bool = option(False, "data.stream on CUDA: decode JPEG files on the GPU (nvJPEG)")


@dataclass
class ModelConfig(HeadOptions):
    """The image encoder (backbone) and the methods' projection head."""

    encoder: str = option("small_resnet", "image encoder", choices=lazy_choices("contrastkit.encoders", "IMAGE_ENCODERS"))
    width: int = option(32, "base width (channels) of the encoder", ge=1)
    cifar_stem: bool = option(True, "3x3 stem without max-pool for small images (ResNets)")


@dataclass
class EvalConfig:
    """Evaluation of frozen features, fine-tuning and pictures."""

    enabled: bool = option(True, "evaluate after training")
    knn: bool = option(True, "weighted kNN classifier")
    knn_k: int = option(200, "neighbours of the kNN classifier", ge=1)
    knn_temperature: float = option(0.1, "temperature of the kNN vote weights", gt=0)
    linear_probe: bool = option(True, "linear probe on all labels")
    few_label_shots: list[int] = option(help="labels per class of the few-label probes", factory=lambda: [1, 10, 100], ge=1)
    few_label_draws: int = option(5, "random label draws per few-label probe", ge=1)
    baselines: bool = option(True, "also evaluate the untrained network (and raw pixels)")
    finetune: bool = option(False, "fine-tune the encoder vs. training from scratch")
    finetune_shots: list[int] = option(help="labels per class for fine-tuning (0: all)", factory=lambda: [10, 0], ge=0)
    finetune_epochs: int = option(30, "fine-tuning epochs", ge=1)
    finetune_lr: float = option(1e-3, "fine-tuning learning rate", gt=0)
    plots: bool = option(True, "curves, embedding map and neighbour pictures")
    tsne_points: int = option(2000, "test points in the t-SNE map", ge=1)
    batch_size: int = option(512, "batch size of feature extraction", ge=1)
    max_train_samples: int | None = option(
        None, "probe with a seeded random subset of this many labelled training images (quick checks)", ge=1
    )
    max_test_samples: int | None = option(None, "evaluate on a seeded random subset of the test split", ge=1)
    episodes: int = option(0, "N-way K-shot episodes on the test features (0: none; 600 is the usual count)", ge=0)
    episode_ways: int = option(5, "classes per episode (N)", ge=2)
    episode_shots: list[int] = option(help="labelled examples per class (K), one evaluation each", factory=lambda: [1, 5], ge=1)
    episode_queries: int = option(15, "query examples per class and episode", ge=1)
    episode_metric: str = option("cosine", "prototype classifier: cosine or euclidean", choices=("cosine", "euclidean"))
    episode_classes: str = option(
        "all", "all test classes, or novel: the classes not in data.train_classes", choices=("all", "novel")
    )


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


@dataclass
class Config:
    """A whole run: the task, its sections, the method, optimiser, training loop and evaluation.

    The task's own sections (``data``, ``model``, ``text``, ``recsys``, ...) are attributes too:
    ``cfg.data`` is ``cfg.sections["data"]``.
    """

    name: str = "run"
    task: str = "image"
    method: MethodOptions = field(default_factory=MethodOptions)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sections: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections") or {}
        if name in sections:
            return sections[name]
        raise AttributeError(
            f"config of task {self.__dict__.get('task')!r} has no section {name!r}"
            f" (its sections: {', '.join(sections) or 'none'})"
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "task": self.task}
        out.update({key: dataclasses.asdict(value) for key, value in self.sections.items()})
        for key in ("method", *COMMON_SECTIONS):
            out[key] = dataclasses.asdict(getattr(self, key))
        return out


# ----------------------------------------------------------------------------- building


def _task(name: str) -> Any:
    from contrastkit.tasks import get_task

    return get_task(name)


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


def config_from_dict(data: dict[str, Any], *, saved: bool = False) -> Config:
    """Build and validate a Config from a (possibly partial) nested dict. ``saved``: the dict
    is a run folder's config.yaml, perhaps written by an older contrastkit (moved keys are
    migrated, sections and method options of other tasks and methods dropped)."""
    if not isinstance(data, dict):
        raise UserError(f"a recipe must be a mapping of sections, got {type(data).__name__}")
    task_name = data.get("task", "image")
    if not isinstance(task_name, str):
        raise UserError(f"task: expected a string, got {task_name!r}")
    task = _task(task_name)
    data = _moved(data, saved, task.sections)
    allowed = ["name", "task", *task.sections, "method", *COMMON_SECTIONS]
    for key in list(data):
        if key in allowed:
            continue
        owners = _section_owners(str(key))
        if saved and owners:
            data.pop(key)
        elif owners:
            raise UserError(
                f"section {key!r} belongs to task {' / '.join(owners)}; this recipe's task is "
                f"{task_name!r} (its sections: {', '.join(allowed[2:])})"
            )
        else:
            raise unknown_key("", str(key), allowed)
    name = data.get("name", "run")
    if not isinstance(name, str):
        raise UserError(f"name: expected a string, got {name!r}")
    method = _method_options(task, data.get("method") or {}, saved)
    common = {key: build(cls, data.get(key) or {}, f"{key}.") for key, cls in COMMON_SECTIONS.items()}
    sections = {key: build(cls, data.get(key) or {}, f"{key}.") for key, cls in task.sections.items()}
    cfg = Config(name=name, task=task_name, method=method, sections=sections, **common)
    for key in (*sections, *COMMON_SECTIONS):
        check(getattr(cfg, key), key)
    task.validate(cfg)
    return cfg


def _section_owners(key: str) -> list[str]:
    from contrastkit.tasks import all_tasks

    return [t.name for t in all_tasks() if key in t.sections]


def _method_options(task: Any, data: Any, saved: bool) -> MethodOptions:
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


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `update` wins."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def with_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A recipe dict with ``--set`` overrides merged in. When the overrides switch the task or
    ``method.name``, what the recipe set for the old one and the new one does not have (the
    old task's sections, the old method's options) is dropped, with one warning naming it:
    ``--set method.name=byol`` works on a SimCLR recipe, ``--set task=text`` on the default one."""
    data = dict(data)
    dropped: list[str] = []
    new_task = overrides.get("task")
    if isinstance(new_task, str) and new_task != data.get("task", "image"):
        keep = set(_task(new_task).sections)
        for key in list(data):
            if _section_owners(str(key)) and key not in keep:
                dropped.append(f"section {key}")
                del data[key]
    method_over = overrides.get("method")
    if not isinstance(method_over, dict):
        method_over = {}
    base_method = data.get("method")
    if isinstance(base_method, dict):
        task = _task(str(new_task or data.get("task", "image")))
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


def read_recipe(recipe: str) -> dict[str, Any]:
    """Read a recipe given as a shipped name (e.g. 'digits-simclr') or a YAML file path."""
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"recipe file {recipe!r} does not exist")
        text = path.read_text()
    else:
        names = recipe_names()
        if recipe not in names:
            raise UserError(
                f"unknown recipe {recipe!r}{closest(recipe, names)}; shipped recipes: "
                f"{', '.join(names)} (or give a path to a .yaml file)"
            )
        text = (resources.files("contrastkit") / "recipes" / f"{recipe}.yaml").read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise UserError(f"recipe {recipe!r} is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise UserError(f"recipe {recipe!r} must be a mapping of sections, got {type(data).__name__}")
    return data


def load_config(recipe: str | None = None, overrides: list[str] | None = None) -> Config:
    """Recipe (shipped name or path; None = the digits quickstart) plus `--set` overrides."""
    data = read_recipe(recipe or "digits-simclr")
    return config_from_dict(with_overrides(data, parse_overrides(overrides or [])))


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A validated copy of `cfg` with `--set key=value` overrides applied."""
    if not overrides:
        return cfg
    return config_from_dict(with_overrides(cfg.to_dict(), parse_overrides(overrides)))


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True))


def check_task(name: str) -> str:
    """``name`` if it is a registered task, else a one-line error listing them."""
    from contrastkit.tasks import task_names

    return check_choice("task", name, task_names())
