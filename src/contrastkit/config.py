"""Typed run configuration: dataclasses loaded from YAML recipes, with `key=value` overrides.

Every key is checked: unknown keys get the closest valid name suggested, wrong types and
out-of-range values get a one-line `UserError` naming the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from contrastkit.errors import UserError, check_choice, closest


@dataclass
class DataConfig:
    """Which images to learn from and how to augment them."""

    name: str = "digits"
    root: str | None = None
    download: bool = False
    image_size: int | None = None
    augment: list[dict[str, Any]] | None = None
    views: int = 2


@dataclass
class ModelConfig:
    """Encoder (backbone) and projection head."""

    encoder: str = "small_resnet"
    width: int = 32
    cifar_stem: bool = True
    projection_dim: int = 128
    projection_hidden_dim: int = 512
    projection_layers: int = 2
    projection_batch_norm: bool = True


@dataclass
class MethodConfig:
    """The self-supervised objective."""

    name: str = "simclr"
    temperature: float = 0.2
    similarity: str = "cosine"


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule (linear warm-up, then cosine decay)."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_fraction: float = 0.05
    schedule: str = "cosine"
    final_lr_fraction: float = 0.0
    grad_clip: float | None = None
    scale_lr_by_batch: bool = False


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = 10
    max_steps: int | None = None
    time_budget_minutes: float | None = None
    batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    checkpoint_every: int = 500
    log_every: int = 10
    num_threads: int | None = None
    progress: bool = True


@dataclass
class EvalConfig:
    """Evaluation of frozen features, fine-tuning and pictures."""

    enabled: bool = True
    knn: bool = True
    knn_k: int = 200
    knn_temperature: float = 0.1
    linear_probe: bool = True
    few_label_shots: list[int] = field(default_factory=lambda: [1, 10, 100])
    few_label_draws: int = 5
    baselines: bool = True
    finetune: bool = False
    finetune_shots: list[int] = field(default_factory=lambda: [10, 0])
    finetune_epochs: int = 30
    finetune_lr: float = 1e-3
    plots: bool = True
    tsne_points: int = 2000
    batch_size: int = 512


@dataclass
class Config:
    """A whole run: data, model, method, optimiser, training loop and evaluation."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- choices

CHOICES: dict[str, tuple[str, ...]] = {
    "method.name": ("simclr",),
    "method.similarity": ("cosine", "dot", "neg_euclidean"),
    "optim.name": ("sgd", "adamw", "lars"),
    "optim.schedule": ("cosine", "constant"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
}


def _validate(cfg: Config) -> None:
    from contrastkit.data.image import DATASETS
    from contrastkit.encoders import IMAGE_ENCODERS

    check_choice("data.name", cfg.data.name, DATASETS)
    check_choice("model.encoder", cfg.model.encoder, IMAGE_ENCODERS)
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        check_choice(key, getattr(getattr(cfg, section), name), allowed)
    if not cfg.train.device == "auto" and cfg.train.device.split(":")[0] not in (
        "cpu",
        "cuda",
        "mps",
    ):
        raise UserError(
            f"train.device {cfg.train.device!r} is not allowed; use auto, cpu, cuda, cuda:N or mps"
        )

    def positive(key: str, value: float | int | None, *, strict: bool = True) -> None:
        if value is None:
            return
        if (value <= 0) if strict else (value < 0):
            bound = "> 0" if strict else ">= 0"
            raise UserError(f"{key} must be {bound}, got {value}")

    if cfg.method.temperature <= 0:
        raise UserError(f"method.temperature must be > 0, got {cfg.method.temperature}")
    if cfg.train.batch_size < 2:
        raise UserError(
            f"train.batch_size must be >= 2 (contrastive losses need negatives), got {cfg.train.batch_size}"
        )
    if cfg.data.views < 2:
        raise UserError(f"data.views must be >= 2, got {cfg.data.views}")
    positive("optim.lr", cfg.optim.lr)
    positive("optim.weight_decay", cfg.optim.weight_decay, strict=False)
    positive("optim.grad_clip", cfg.optim.grad_clip)
    positive("train.epochs", cfg.train.epochs)
    positive("train.max_steps", cfg.train.max_steps)
    positive("train.time_budget_minutes", cfg.train.time_budget_minutes)
    positive("train.checkpoint_every", cfg.train.checkpoint_every)
    positive("train.log_every", cfg.train.log_every)
    positive("train.num_threads", cfg.train.num_threads)
    positive("model.width", cfg.model.width)
    positive("model.projection_dim", cfg.model.projection_dim)
    positive("model.projection_hidden_dim", cfg.model.projection_hidden_dim)
    positive("model.projection_layers", cfg.model.projection_layers)
    positive("data.image_size", cfg.data.image_size)
    positive("eval.knn_k", cfg.eval.knn_k)
    positive("eval.knn_temperature", cfg.eval.knn_temperature)
    positive("eval.few_label_draws", cfg.eval.few_label_draws)
    positive("eval.finetune_epochs", cfg.eval.finetune_epochs)
    positive("eval.batch_size", cfg.eval.batch_size)
    if not 0 <= cfg.optim.warmup_fraction < 1:
        raise UserError(f"optim.warmup_fraction must be in [0, 1), got {cfg.optim.warmup_fraction}")
    for shot in cfg.eval.few_label_shots:
        positive("eval.few_label_shots", shot)
    for shot in cfg.eval.finetune_shots:
        positive("eval.finetune_shots (0 means all labels)", shot, strict=False)


# ----------------------------------------------------------------------------- typed loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check (and gently coerce) one value against a dataclass field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except UserError as exc:
                errors.append(str(exc))
        allowed = " or ".join(_type_name(a) for a in args)
        raise UserError(f"{key}: {value!r} is not a valid value; expected {allowed}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise UserError(f"{key}: expected a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
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


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise UserError(f"{prefix or 'recipe'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise UserError(
                f"unknown config key {full!r}{closest(str(key), names)}; "
                f"allowed in {prefix.rstrip('.') or 'the top level'}: {', '.join(names)}"
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, f"{full}.")  # type: ignore[arg-type]
        else:
            kwargs[key] = _coerce(full, value, tp)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a Config from a (possibly partial) nested dict."""
    cfg: Config = _build(Config, data, "")
    _validate(cfg)
    return cfg


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
    data = merge(data, parse_overrides(overrides or []))
    return config_from_dict(data)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A validated copy of `cfg` with `--set key=value` overrides applied."""
    if not overrides:
        return cfg
    return config_from_dict(merge(cfg.to_dict(), parse_overrides(overrides)))


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
