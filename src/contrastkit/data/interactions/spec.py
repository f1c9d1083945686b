"""The ``recsys:`` section of the recommendation tasks (recsys, and sequences on interaction
histories): which interactions, how they are cleaned and split, and the ranking evaluation's
settings; :func:`load_data` reads what it names."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from contrastkit.data.interactions.dataset import InteractionData, build_interaction_data
from contrastkit.data.interactions.download import MOVIELENS, locate_movielens
from contrastkit.data.interactions.given import GIVEN_FORMATS, load_given
from contrastkit.data.interactions.readers import FORMATS, read_interactions
from contrastkit.data.interactions.splits import SPLITS
from contrastkit.errors import UserError
from contrastkit.evaluate.ranking import METRICS
from contrastkit.options import option

DATA_DIR = "data"  # a run's copy of its split (split.npz, ids.json)


@dataclass
class RecsysConfig:
    """Recommendation data, split and evaluation (the model is the recipe's ``method``)."""

    data: str = option("ml-100k", "ml-100k | ml-1m | ml-10m | ml-20m, or a file / folder path")
    root: str | None = option(None, "folder holding a named MovieLens data set")
    download: bool = option(False, "fetch a named MovieLens data set from GroupLens if absent")
    format: str = option("auto", "file format of the interactions", choices=FORMATS)
    user_column: str = option("user_id", "user column of a table")
    item_column: str = option("item_id", "item column of a table")
    rating_column: str | None = option("rating", "rating column of a table (null: none)")
    time_column: str | None = option("timestamp", "time column of a table (null: none)")
    separator: str | None = option(None, "column separator of a text table (default: by format)")
    rating_threshold: float | None = option(4.0, "ratings >= this are positives; null keeps all")
    min_user_interactions: int = option(0, "k-core filtering of users (0 or 1: off)", ge=0)
    min_item_interactions: int = option(0, "k-core filtering of items (0 or 1: off)", ge=0)
    max_users: int | None = option(None, "keep the N users with the smallest ids (quick runs)", ge=1)
    split: str = option(
        "random", "per-user split (always with validation); given: the train / valid / test files",
        choices=(*SPLITS, "given"),
    )
    train_file: str | None = option(None, "split=given: the train file (relative to recsys.root if set)")
    valid_file: str | None = option(
        None, "split=given: the validation file (null: carved from train by split_ratios[0]:[1])"
    )
    test_file: str | None = option(None, "split=given: the test file (relative to recsys.root if set)")
    given_format: str = option(
        "auto", "split=given: pairs (user item [rating]), lists (user item item ...) or a table format",
        choices=GIVEN_FORMATS,
    )
    split_ratios: list[float] = option(help="train, valid, test shares", factory=lambda: [0.8, 0.1, 0.1], ge=0)
    eval_ks: list[int] = option(help="K of the ranking metrics", factory=lambda: [10, 20, 50], ge=1)
    valid_metric: str = option("ndcg@20", "early stopping and best checkpoint (metric@K)")
    eval_every: int = option(1, "epochs between validation passes", ge=1)
    patience: int = option(10, "validation passes without improvement before stopping", ge=1)
    min_epochs: int = option(0, "never stop early before this epoch (contrastive models start slowly)", ge=0)
    eval_block_users: int = option(1024, "users scored at once in full ranking", ge=1)

    def check_values(self, prefix: str) -> None:
        ratios = self.split_ratios
        if len(ratios) != 3 or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
            raise UserError(
                f"{prefix}.split_ratios must be 3 numbers >= 0 summing to 1 (train, valid, test), got {ratios}"
            )
        if self.split == "given":
            check_given(self, prefix)
        elif self.split != "leave_one_out" and (ratios[1] <= 0 or ratios[2] <= 0):
            raise UserError(f"{prefix}.split_ratios needs a validation and a test share > 0, got {ratios}")
        if not self.eval_ks:
            raise UserError(f"{prefix}.eval_ks must list at least one K")
        metric_key(self)


def check_given(r: RecsysConfig, prefix: str) -> None:
    """split=given: train and test files named; the filters that would change the split are off."""
    missing = [k for k in ("train_file", "test_file") if not getattr(r, k)]
    if missing:
        raise UserError(f"{prefix}.split=given needs {' and '.join(f'{prefix}.{k}' for k in missing)} (paths)")
    if r.min_user_interactions > 1 or r.min_item_interactions > 1:
        raise UserError(
            f"{prefix}.split=given keeps the published split: set {prefix}.min_user_interactions and "
            "min_item_interactions to 0 (k-core filtering would change it)"
        )
    if r.valid_file is None and r.split_ratios[1] <= 0:
        raise UserError(
            f"{prefix}.split=given without {prefix}.valid_file carves validation from train: "
            f"{prefix}.split_ratios needs a validation share > 0, got {r.split_ratios}"
        )


def split_protocol(r: RecsysConfig) -> str:
    """How the data was split, for results.json."""
    if r.split == "given":
        files = [r.train_file, r.valid_file or "(valid carved from train)", r.test_file]
        return f"given split {' / '.join(str(f) for f in files)}"
    return f"{r.split} split {r.split_ratios if r.split != 'leave_one_out' else ''}"


def metric_key(r: RecsysConfig) -> tuple[str, int]:
    """(metric, K) of ``valid_metric``, checked against the metrics and ``eval_ks``."""
    match = re.fullmatch(r"([a-z]+)@(\d+)", r.valid_metric)
    if not match or match.group(1) not in METRICS:
        allowed = ", ".join(f"{m}@K" for m in METRICS)
        raise UserError(f"recsys.valid_metric {r.valid_metric!r} is not allowed; use one of {allowed}")
    k = int(match.group(2))
    if k not in r.eval_ks:
        raise UserError(f"recsys.valid_metric {r.valid_metric!r}: K={k} is not in recsys.eval_ks {r.eval_ks}")
    return match.group(1), k


def valid_metric_name(r: RecsysConfig) -> str:
    """What the validation metric of a run on the valid split is logged as (train_log.csv,
    results.json's ``validation``; recsys and item2vec): ``val_`` and ``valid_metric``, e.g.
    ``val_ndcg@20``."""
    return f"val_{r.valid_metric}"


def _path(r: RecsysConfig, value: str) -> Path:
    return Path(r.root) / value if r.root and not Path(value).is_absolute() else Path(value)


def load_data(r: RecsysConfig, seed: int) -> InteractionData:
    """Read, clean and split the configured interactions."""
    if r.split == "given":
        check_given(r, "recsys")
        assert r.train_file is not None and r.test_file is not None
        return load_given(
            _path(r, r.train_file), None if r.valid_file is None else _path(r, r.valid_file), _path(r, r.test_file),
            format=r.given_format, rating_threshold=r.rating_threshold, max_users=r.max_users,
            split_ratios=r.split_ratios, seed=seed, user_column=r.user_column, item_column=r.item_column,
            rating_column=r.rating_column, time_column=r.time_column, separator=r.separator,
        )
    if r.data in MOVIELENS:
        source: Path = locate_movielens(r.data, r.root, download=r.download)
    else:
        source = _path(r, r.data)
        if not source.exists():
            raise UserError(
                f"recsys.data {r.data!r} is neither a known data set ({', '.join(MOVIELENS)}) nor an "
                f"existing file or folder (looked at {str(source)!r})"
            )
    raw = read_interactions(
        source, format=r.format, user_column=r.user_column, item_column=r.item_column,
        rating_column=r.rating_column, time_column=r.time_column, separator=r.separator,
    )
    return build_interaction_data(
        raw, rating_threshold=r.rating_threshold, min_user_interactions=r.min_user_interactions,
        min_item_interactions=r.min_item_interactions, max_users=r.max_users, split=r.split,
        split_ratios=r.split_ratios, seed=seed,
    )


def run_split(run_dir: Path, r: RecsysConfig, seed: int, *, resume: bool, save: bool = True) -> InteractionData:
    """The interaction split of a run: read back from its ``data/`` folder when continuing one
    that has it, else read and split from the source (and saved there with ``save``)."""
    folder = Path(run_dir) / DATA_DIR
    if resume and folder.is_dir():
        return InteractionData.load(folder)
    data = load_data(r, seed)
    if save:
        data.save(folder)
    return data


def saved_split(run_dir: Path) -> InteractionData:
    """The interaction split a run saved in its ``data/`` folder."""
    folder = Path(run_dir) / DATA_DIR
    if not folder.is_dir():
        raise UserError(f"{str(run_dir)!r} has no {DATA_DIR}/ folder (the run's interaction split); was it trained?")
    return InteractionData.load(folder)
