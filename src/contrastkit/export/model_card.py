"""The model card (``README.md``) of a Hugging Face export: YAML front matter that the Hub reads
(``library_name: sentence-transformers``, ``pipeline_tag``, ``tags``), then markdown — what the
model is, the training data, the method (with its paper and options), the main settings from
the run's config.yaml, the training summary and a results table of every evaluation number in
the run's results.json, and how to load it."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import yaml

from contrastkit.config import Config

MAX_RESULT_ROWS = 60
# text-section keys that say what the model is and what it was trained and evaluated on
DATA_KEYS = ("train_file", "train_columns", "train_filter", "max_train_examples", "augment")
EVAL_KEYS = ("sts_file", "retrieval_file")
MODEL_KEYS = ("encoder", "pooling", "max_length", "dropout")
OPTIM_KEYS = ("name", "lr", "weight_decay", "schedule", "warmup_fraction")
TRAIN_KEYS = ("batch_size", "epochs", "max_steps", "precision", "seed")


def model_card(cfg: Config, results: dict[str, Any], *, name: str) -> str:
    """The card's text for a text run with config ``cfg`` and results.json ``results``;
    ``name``: the model's title (the export folder's name)."""
    from contrastkit.methods.registry import get_method

    method = cfg.method.name
    spec = get_method(method)
    text = cfg.text
    front = {
        "library_name": "sentence-transformers",
        "pipeline_tag": "sentence-similarity",
        "tags": ["sentence-transformers", "sentence-similarity", "feature-extraction", "contrastkit", method],
    }
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
        f"# {name}", "",
        f"A sentence-embedding model ({text.pooling} pooling over a transformer encoder, "
        f"{text.max_length} tokens at most) trained with **{method}** by contrastkit, a library for contrastive "
        "self-supervised learning.",
        "",
        "## Data", "",
        *_bullets({f"text.{k}": _shown(getattr(text, k)) for k in DATA_KEYS if getattr(text, k) not in (None, [], {})}),
        *_bullets({f"evaluation: text.{k}": _shown(getattr(text, k)) for k in EVAL_KEYS if getattr(text, k)}),
        "",
        "## Method", "",
        f"**{method}**: {spec.summary.rstrip('.')} ({spec.paper}).", "",
        *_bullets({f"method.{k}": v for k, v in _fields(cfg.method).items() if k != "name"}),
        "",
        "## Settings", "",
        "| setting | value |", "|---|---|",
        *(f"| text.{k} | {_cell(getattr(text, k))} |" for k in MODEL_KEYS),
        *(f"| optim.{k} | {_cell(getattr(cfg.optim, k))} |" for k in OPTIM_KEYS),
        *(f"| train.{k} | {_cell(getattr(cfg.train, k))} |" for k in TRAIN_KEYS),
        "",
        *_training(results.get("train") or {}),
        "## Results", "",
        *_results(results.get("eval") or {}),
        "",
        "## Usage", "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        "model = SentenceTransformer(\"PATH/TO/THIS/FOLDER\")",
        "embeddings = model.encode([\"A man is playing a guitar.\", \"Someone plays an instrument.\"])",
        "```",
        "",
        "Embeddings are not normalised (as `contrastkit embed` writes them); compare them by cosine similarity.",
        "",
    ]
    return "\n".join(lines)


def _fields(options: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    return {}


def _shown(value: Any) -> Any:
    """A data file as its name (the run's folders say nothing to a reader of the card)."""
    if isinstance(value, str) and ("/" in value or "\\" in value):
        return Path(value).name
    return value


def _cell(value: Any) -> str:
    return "-" if value is None else str(value).replace("|", "\\|")


def _bullets(values: dict[str, Any]) -> list[str]:
    return [f"- `{k}`: {_cell(v)}" for k, v in values.items()]


def _training(train: dict[str, Any]) -> list[str]:
    if not train:
        return []
    parts = [f"{train['steps']} steps" if train.get("steps") is not None else "",
             f"{train['epochs_done']:.2f} epochs" if isinstance(train.get("epochs_done"), int | float) else "",
             f"{train['seconds']:.0f} s" if isinstance(train.get("seconds"), int | float) else "",
             f"final loss {train['final_loss']:.4f}" if isinstance(train.get("final_loss"), int | float) else ""]
    shown = ", ".join(p for p in parts if p)
    return [f"Trained for {shown}.", ""] if shown else []


def evaluation_numbers(ev: dict[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    """Every finite number of results.json's ``eval`` entry by its path (``ssl / sts / spearman``),
    timings left out."""
    rows: list[tuple[str, float]] = []
    for key, value in ev.items():
        name = f"{prefix} / {key}" if prefix else str(key)
        if isinstance(value, dict):
            rows += evaluation_numbers(value, name)
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) \
                and "seconds" not in str(key):
            rows.append((name, float(value)))
    return rows


def _results(ev: dict[str, Any]) -> list[str]:
    rows = evaluation_numbers(ev)
    if not rows:
        return ["No evaluation in results.json (trained with --no-eval): `contrastkit evaluate RUN`, then export again."]
    shown = rows[:MAX_RESULT_ROWS]
    lines = ["Every number of the run's results.json `eval` (`encoders / trained`: this model; `encoders / initial`: the "
             "encoder before training).", "",
             "| metric | value |", "|---|---|", *(f"| {name} | {value:.4g} |" for name, value in shown)]
    if len(rows) > len(shown):
        lines += ["", f"({len(rows) - len(shown)} more numbers in results.json)"]
    return lines
