"""Per-user train / validation / test splits: random ratio, temporal ratio, leave-one-out.

Every split has a validation part (early stopping and model choice never look at the test set).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from contrastkit.errors import UserError, check_choice

SPLITS = ("random", "temporal", "leave_one_out")


@dataclass
class Split:
    """Row indices of the train, validation and test interactions."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def _rank_within_user(users: np.ndarray, order_key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by (user, key), each row's position within its user, and its user's count."""
    order = np.lexsort((order_key, users))
    su = users[order]
    counts = np.bincount(su, minlength=int(su.max()) + 1 if su.size else 0)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(su.size) - starts[su]
    return order, pos, counts[su]


def split_interactions(
    users: np.ndarray,
    timestamps: np.ndarray | None,
    *,
    kind: str,
    ratios: list[float] | tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> Split:
    """Split each user's interactions (rows of `users`) into train / valid / test.

    - random: a seeded per-user shuffle, then the first round(n·r_train) rows to train, up to
      round(n·(r_train + r_valid)) to validation, the rest to test (train keeps at least one).
    - temporal: the same cut points, with each user's interactions in time order (oldest to train).
    - leave_one_out: each user's last interaction (by time) to test, the one before to
      validation; users with fewer than 3 interactions keep all of theirs in train.
    """
    check_choice("recsys.split", kind, SPLITS)
    n = users.shape[0]
    if n == 0:
        raise UserError("cannot split an empty set of interactions")
    rng = np.random.default_rng(seed)
    if kind in ("temporal", "leave_one_out") and timestamps is None:
        if kind == "temporal":
            raise UserError("recsys.split=temporal needs timestamps; set recsys.time_column or use split=random")
        warnings.warn("leave_one_out without timestamps: the held-out items are chosen at random", stacklevel=2)
    key: np.ndarray
    if kind == "random" or timestamps is None:
        key = np.asarray(rng.random(n))
    else:
        # time order, ties broken at random (the file order carries no meaning)
        tie = np.asarray(rng.random(n))
        order0 = np.lexsort((tie, timestamps.astype(np.float64)))
        key = np.empty(n)
        key[order0] = np.arange(n)
    order, pos, count = _rank_within_user(users, key)
    if kind == "leave_one_out":
        enough = count >= 3
        test_mask = enough & (pos == count - 1)
        valid_mask = enough & (pos == count - 2)
    else:
        if len(ratios) != 3 or any(r < 0 for r in ratios) or not np.isclose(sum(ratios), 1.0):
            raise UserError(f"recsys.split_ratios must be 3 numbers >= 0 summing to 1, got {list(ratios)}")
        r_train, r_valid, _ = ratios
        train_end = np.maximum(np.rint(count * r_train), 1)
        valid_end = np.maximum(np.rint(count * (r_train + r_valid)), train_end)
        test_mask = pos >= valid_end
        valid_mask = (pos >= train_end) & ~test_mask
    train_mask = ~(test_mask | valid_mask)
    return Split(
        train=np.sort(order[train_mask]),
        valid=np.sort(order[valid_mask]),
        test=np.sort(order[test_mask]),
    )
