"""A split implicit-feedback data set with its id maps, saved with the run.

Internal users are 0..U-1 and items 0..I-1; `user_ids` / `item_ids` map them back to the user's
own ids, so recommendations come back in those ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Unpack

import numpy as np

from contrastkit.data.interactions.preprocess import CleanOptions, clean
from contrastkit.data.interactions.readers import RawInteractions
from contrastkit.data.interactions.splits import split_interactions
from contrastkit.errors import UserError

SPLIT_FILE = "split.npz"
IDS_FILE = "ids.json"


@dataclass
class InteractionData:
    """Train / validation / test (user, item) pairs as (E, 2) int64 arrays, plus id maps."""

    n_users: int
    n_items: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    user_ids: list[str]
    item_ids: list[str]
    item_titles: list[str] | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    train_time: np.ndarray | None = None  # timestamps of the train pairs, where the data has them

    # ------------------------------------------------------------------ lookups

    def user_index(self, raw_id: str) -> int:
        """Internal index of one of the user's own user ids (UserError if unknown)."""
        return _lookup(self.user_ids, raw_id, "user")

    def item_index(self, raw_id: str) -> int:
        """Internal index of one of the user's own item ids (UserError if unknown)."""
        return _lookup(self.item_ids, raw_id, "item")

    def title(self, item: int) -> str:
        return self.item_titles[item] if self.item_titles else ""

    def all_pairs(self) -> np.ndarray:
        return np.concatenate([self.train, self.valid, self.test])

    def item_popularity(self) -> np.ndarray:
        """Training interactions per item."""
        return np.bincount(self.train[:, 1], minlength=self.n_items)

    # ------------------------------------------------------------------ persistence

    def save(self, folder: Path) -> None:
        """split.npz (internal pairs) and ids.json (id maps, titles, stats) in `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {"train": self.train, "valid": self.valid, "test": self.test}
        if self.train_time is not None:
            arrays["train_time"] = self.train_time
        np.savez_compressed(folder / SPLIT_FILE, **arrays)
        meta = {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "user_ids": self.user_ids,
            "item_ids": self.item_ids,
            "item_titles": self.item_titles,
            "stats": self.stats,
        }
        tmp = folder / f".{IDS_FILE}.tmp"
        tmp.write_text(json.dumps(meta))
        tmp.replace(folder / IDS_FILE)

    @classmethod
    def load(cls, folder: Path) -> InteractionData:
        folder = Path(folder)
        if not (folder / SPLIT_FILE).is_file() or not (folder / IDS_FILE).is_file():
            raise UserError(f"{str(folder)!r} holds no saved interaction split ({SPLIT_FILE}, {IDS_FILE})")
        meta = json.loads((folder / IDS_FILE).read_text())
        with np.load(folder / SPLIT_FILE) as arrays:
            train, valid, test = (arrays[k].astype(np.int64) for k in ("train", "valid", "test"))
            train_time = arrays.get("train_time", None)
        return cls(
            n_users=int(meta["n_users"]),
            n_items=int(meta["n_items"]),
            train=train,
            valid=valid,
            test=test,
            user_ids=list(meta["user_ids"]),
            item_ids=list(meta["item_ids"]),
            item_titles=meta.get("item_titles"),
            stats=dict(meta.get("stats", {})),
            train_time=train_time,
        )


def _lookup(ids: list[str], raw_id: str, what: str) -> int:
    index = {v: i for i, v in enumerate(ids)}
    key = str(raw_id)
    if key not in index:
        sample = ", ".join(ids[:3])
        raise UserError(
            f"unknown {what} id {key!r}: not among the run's {len(ids)} {what}s (ids like {sample}, ...)"
        )
    return index[key]


def build_interaction_data(
    raw: RawInteractions,
    *,
    split: str = "random",
    split_ratios: list[float] | tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    **cleaning: Unpack[CleanOptions],
) -> InteractionData:
    """Clean (`cleaning`: `clean`'s filters, rating_threshold required), re-index (compact
    0..U-1 / 0..I-1) and split raw interactions."""
    raw, stats = clean(raw, **cleaning)
    user_codes, users = np.unique(raw.users, return_inverse=True)
    item_codes, items = np.unique(raw.items, return_inverse=True)
    users, items = users.astype(np.int64).reshape(-1), items.astype(np.int64).reshape(-1)
    parts = split_interactions(users, raw.timestamps, kind=split, ratios=split_ratios, seed=seed)
    pairs = np.stack([users, items], axis=1)
    item_ids = [str(v) for v in raw.item_ids[item_codes].tolist()]
    titles = [raw.item_titles.get(i, "") for i in item_ids] if raw.item_titles else None
    data = InteractionData(
        n_users=int(user_codes.size),
        n_items=int(item_codes.size),
        train=pairs[parts.train],
        valid=pairs[parts.valid],
        test=pairs[parts.test],
        user_ids=[str(v) for v in raw.user_ids[user_codes].tolist()],
        item_ids=item_ids,
        item_titles=titles,
        train_time=None if raw.timestamps is None else np.asarray(raw.timestamps)[parts.train],
    )
    full: dict[str, Any] = dict(stats)
    full.update(
        users=data.n_users,
        items=data.n_items,
        train=int(data.train.shape[0]),
        valid=int(data.valid.shape[0]),
        test=int(data.test.shape[0]),
        density=float(len(raw)) / max(data.n_users * data.n_items, 1),
    )
    data.stats = full
    return data
