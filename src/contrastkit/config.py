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
    # SupCon / semi-supervised: the fraction of training images whose label is used (per class,
    # seeded); the rest are unlabeled and fall back to instance discrimination
    label_fraction: float = 1.0


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
class NegativesConfig:
    """How negatives are chosen / weighted in the InfoNCE loss (contrastkit.negatives.mining):
    kind uniform | hard_topk | threshold | margin | hard_weighting | debiased | decoupled, with a
    schedule (constant | linear | cosine) moving from uniform to the full strategy."""

    kind: str = "uniform"
    k: int = 64
    threshold: float = 0.0
    margin: float = 0.1
    beta: float = 1.0
    tau_plus: float = 0.1
    schedule: str = "constant"
    warmup_fraction: float = 0.0
    strength: float = 1.0


@dataclass
class MethodConfig:
    """The self-supervised objective."""

    name: str = "simclr"
    temperature: float = 0.2
    similarity: str = "cosine"
    # momentum (EMA) target / key encoder: MoCo v2/v3, BYOL
    momentum: float = 0.99
    momentum_final: float = 1.0
    momentum_schedule: str = "cosine"
    # MoCo: FIFO queue of negative keys (0 = none), in-batch keys as extra negatives, symmetric
    # loss, and BatchNorm split into groups with the key batch shuffled across them (ShuffleBN)
    queue_size: int = 0
    in_batch_negatives: bool = False
    symmetric: bool = True
    bn_splits: int = 1
    # predictor MLP (MoCo v3, BYOL, SimSiam)
    predictor_hidden_dim: int = 512
    # Barlow Twins off-diagonal weight; VICReg invariance / variance / covariance weights
    barlow_lambda: float = 0.0051
    vicreg_sim: float = 25.0
    vicreg_var: float = 25.0
    vicreg_cov: float = 1.0
    # collapse diagnostics logged every step (per-dim std, effective rank, alignment, uniformity)
    diagnostics: bool = True
    # negative strategy of the InfoNCE methods (hard negatives, debiasing, schedule)
    negatives: NegativesConfig = field(default_factory=NegativesConfig)


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
    # under torchrun / --nproc: batch_size is the GLOBAL batch (split evenly over the processes)
    sync_batchnorm: bool = True
    dist_timeout_minutes: float = 10.0


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
class TextConfig:
    """Text (task: text, SimCSE) and image–text (task: image_text, CLIP / SigLIP) settings."""

    train_file: str | None = None  # data spec: sick:train, a .txt (one per line), .csv/.tsv/.jsonl
    train_columns: list[str] = field(default_factory=list)  # sentences; or anchor, positive[, negative]
    train_filter: dict[str, Any] | None = None  # keep rows whose columns equal these values
    max_train_examples: int | None = None
    sts_file: str | None = None  # STS evaluation: two sentences and a score
    sts_columns: list[str] = field(
        default_factory=lambda: ["sentence_A", "sentence_B", "relatedness_score"]
    )
    sts_filter: dict[str, Any] | None = None
    retrieval_file: str | None = None  # retrieval evaluation: (query, relevant document) pairs
    retrieval_columns: list[str] = field(default_factory=list)
    retrieval_filter: dict[str, Any] | None = None
    data_root: str | None = None  # where named sources (sick) are looked for first
    encoder: str = "minilm"  # minilm | tiny | a local folder | a hub name
    pooling: str = "mean"
    max_length: int = 64
    dropout: float | None = None  # override the encoder's dropout (SimCSE's noise)
    tiny_width: int = 64
    tiny_layers: int = 2
    tiny_vocab_size: int = 8000
    augment: list[dict[str, Any]] | None = None  # discrete text views, e.g. [{name: word_deletion, p: 0.1}]
    gradcache_chunk: int | None = None  # GradCache: encode this many rows at a time
    embed_dim: int = 128  # image_text: shared embedding width of both towers
    learn_temperature: bool = True
    max_logit_scale: float = 100.0
    siglip_scale_init: float = 10.0
    siglip_bias_init: float = -10.0
    caption_templates: list[str] = field(
        default_factory=lambda: ["a photo of a {label}", "a {tone} {label}", "a {size} {tone} {label}"]
    )
    zero_shot_templates: list[str] = field(default_factory=lambda: ["a photo of a {label}"])
    recall_k: list[int] = field(default_factory=lambda: [1, 5, 10])


@dataclass
class RecsysConfig:
    """Recommendation from implicit feedback (task: recsys): data, split, model, evaluation."""

    data: str = "ml-100k"  # ml-100k | ml-1m | ml-10m | ml-20m, or a file / folder path
    root: str | None = None  # folder holding a named MovieLens data set
    download: bool = False  # fetch a named MovieLens data set from GroupLens if absent
    format: str = "auto"  # auto | ml-100k | movielens-dat | movielens-csv | recbole | csv | tsv | parquet
    user_column: str = "user_id"
    item_column: str = "item_id"
    rating_column: str | None = "rating"
    time_column: str | None = "timestamp"
    separator: str | None = None
    rating_threshold: float | None = 4.0  # ratings >= this are positives; null keeps all
    min_user_interactions: int = 0  # k-core filtering (0 or 1: off)
    min_item_interactions: int = 0
    max_users: int | None = None  # keep the N users with the smallest ids (a slice for quick runs)
    split: str = "random"  # random | temporal | leave_one_out (always with validation)
    split_ratios: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    model: str = "lightgcn"  # mf | lightgcn | sgl | simgcl | xsimgcl
    embedding_dim: int = 64
    layers: int = 2
    reg: float = 1e-4  # L2 on the batch's layer-0 embeddings
    cl_weight: float = 0.1  # λ of the InfoNCE term
    cl_temperature: float = 0.2  # τ
    noise_eps: float = 0.1  # ε of SimGCL / XSimGCL
    cl_layer: int = 1  # XSimGCL: the layer contrasted with the final embeddings
    sgl_augmentation: str = "ed"  # nd | ed | rw
    sgl_drop_ratio: float = 0.1
    eval_ks: list[int] = field(default_factory=lambda: [10, 20, 50])
    valid_metric: str = "ndcg@20"  # early stopping and best checkpoint
    eval_every: int = 1  # epochs between validation passes
    patience: int = 10  # validation passes without improvement before stopping
    min_epochs: int = 0  # never stop early before this epoch (contrastive models start slowly)
    eval_block_users: int = 1024


@dataclass
class Config:
    """A whole run: data, model, method, optimiser, training loop and evaluation."""

    name: str = "run"
    task: str = "image"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    text: TextConfig = field(default_factory=TextConfig)
    recsys: RecsysConfig = field(default_factory=RecsysConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- choices

# Which pipeline runs a config: `image` is contrastkit.pipeline; the others live in the modules
# named by TASK_PIPELINES (same functions: validate, run_all, evaluate, embed).
TASKS: tuple[str, ...] = ("image", "text", "image_text", "recsys")
TASK_PIPELINES: dict[str, str] = {
    "text": "contrastkit.text_pipeline",
    "image_text": "contrastkit.text_pipeline",
    "recsys": "contrastkit.recsys_pipeline",
}

CHOICES: dict[str, tuple[str, ...]] = {
    "method.name": (
        "simclr", "moco_v2", "moco_v3", "byol", "simsiam", "barlow_twins", "vicreg", "supcon",
    ),
    "method.momentum_schedule": ("cosine", "constant"),
    "method.similarity": ("cosine", "dot", "neg_euclidean"),
    "optim.name": ("sgd", "adamw", "lars"),
    "optim.schedule": ("cosine", "constant"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
}


def task_module(task: str) -> Any:
    """The pipeline module of a non-image task (imported lazily: optional dependencies)."""
    import importlib

    check_choice("task", task, TASKS)
    return importlib.import_module(TASK_PIPELINES[task])


def _validate(cfg: Config) -> None:
    check_choice("task", cfg.task, TASKS)
    if cfg.task == "image":
        from contrastkit.data.image import DATASETS
        from contrastkit.encoders import IMAGE_ENCODERS

        check_choice("data.name", cfg.data.name, DATASETS)
        check_choice("model.encoder", cfg.model.encoder, IMAGE_ENCODERS)
        check_choice("method.name", cfg.method.name, CHOICES["method.name"])
    else:
        task_module(cfg.task).validate(cfg)
    from contrastkit.negatives.mining import negative_sampling_from_config

    negative_sampling_from_config(cfg.method.negatives)  # one-line errors naming method.negatives.*
    for key, allowed in CHOICES.items():
        if key == "method.name":
            continue
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
    if not 0 <= cfg.method.momentum <= cfg.method.momentum_final <= 1:
        raise UserError(
            f"method.momentum {cfg.method.momentum} and method.momentum_final "
            f"{cfg.method.momentum_final} must satisfy 0 <= momentum <= momentum_final <= 1"
        )
    positive("method.queue_size", cfg.method.queue_size, strict=False)
    positive("method.bn_splits", cfg.method.bn_splits)
    positive("method.predictor_hidden_dim", cfg.method.predictor_hidden_dim)
    positive("method.barlow_lambda", cfg.method.barlow_lambda, strict=False)
    positive("method.vicreg_sim", cfg.method.vicreg_sim, strict=False)
    positive("method.vicreg_var", cfg.method.vicreg_var, strict=False)
    positive("method.vicreg_cov", cfg.method.vicreg_cov, strict=False)
    if cfg.task == "image" and cfg.train.batch_size % cfg.method.bn_splits:
        raise UserError(
            f"train.batch_size {cfg.train.batch_size} must be divisible by method.bn_splits "
            f"{cfg.method.bn_splits}"
        )
    if not 0 < cfg.data.label_fraction <= 1:
        raise UserError(f"data.label_fraction must be in (0, 1], got {cfg.data.label_fraction}")
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
    positive("train.dist_timeout_minutes", cfg.train.dist_timeout_minutes)
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
