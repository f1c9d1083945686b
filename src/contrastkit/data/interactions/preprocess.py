"""From raw interactions to clean implicit feedback: threshold, user slice, de-duplication, k-core."""

from __future__ import annotations

import re
import warnings
from typing import Required, TypedDict

import numpy as np

from contrastkit.data.interactions.readers import RawInteractions
from contrastkit.errors import UserError


def to_implicit(raw: RawInteractions, threshold: float | None) -> RawInteractions:
    """Keep interactions with rating >= threshold (None keeps all of them)."""
    if threshold is None:
        return raw
    if raw.ratings is None:
        raise UserError(
            f"recsys.rating_threshold is {threshold} but {raw.source or 'the data'} has no rating "
            "column; set recsys.rating_threshold=null or name the column in recsys.rating_column"
        )
    return raw.select(raw.ratings >= threshold)


def natural_key(value: str) -> tuple[int, float | str]:
    return (0, float(value)) if re.fullmatch(r"-?\d+(\.\d+)?", value) else (1, value)


def first_users(raw: RawInteractions, max_users: int | None) -> RawInteractions:
    """Keep the interactions of the `max_users` users with the smallest ids (numeric order)."""
    if max_users is None:
        return raw
    present = np.unique(raw.users)
    if present.size <= max_users:
        return raw
    order = sorted(present.tolist(), key=lambda c: natural_key(str(raw.user_ids[c])))
    keep_users = np.asarray(order[:max_users], dtype=np.int64)
    return raw.select(np.isin(raw.users, keep_users))


def deduplicate(raw: RawInteractions) -> tuple[RawInteractions, int]:
    """One row per (user, item): the latest one (by timestamp, else the last in the file).

    Returns the cleaned interactions and how many duplicate rows were dropped.
    """
    n_items = max(int(raw.item_ids.shape[0]), 1)
    key = raw.users * n_items + raw.items
    time = raw.timestamps if raw.timestamps is not None else np.arange(len(raw), dtype=np.float64)
    # sort by key, then by time; keep the last row of each key
    order = np.lexsort((np.arange(len(raw)), time, key))
    sorted_key = key[order]
    last = np.ones(len(raw), dtype=bool)
    last[:-1] = sorted_key[1:] != sorted_key[:-1]
    keep = np.sort(order[last])
    return raw.select(keep), int(len(raw) - keep.size)


def k_core(raw: RawInteractions, min_user: int, min_item: int) -> RawInteractions:
    """Iteratively drop users with < min_user and items with < min_item interactions."""
    if min_user <= 1 and min_item <= 1:
        return raw
    keep = np.ones(len(raw), dtype=bool)
    while True:
        users, items = raw.users[keep], raw.items[keep]
        u_cnt = np.bincount(users, minlength=raw.user_ids.shape[0])
        i_cnt = np.bincount(items, minlength=raw.item_ids.shape[0])
        bad = keep & ((u_cnt[raw.users] < min_user) | (i_cnt[raw.items] < min_item))
        if not bad.any():
            break
        keep &= ~bad
    return raw.select(keep)


class CleanOptions(TypedDict, total=False):
    """The filters of `clean`, which `build_interaction_data` passes through."""

    rating_threshold: Required[float | None]
    min_user_interactions: int
    min_item_interactions: int
    max_users: int | None


def clean(
    raw: RawInteractions,
    *,
    rating_threshold: float | None,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
    max_users: int | None = None,
) -> tuple[RawInteractions, dict[str, int]]:
    """Threshold → user slice → de-duplication (counted warning) → k-core; never empty."""
    stats = {"rows_read": len(raw)}
    if len(raw) == 0:
        raise UserError(f"{raw.source or 'the data'} holds no interactions")
    raw = to_implicit(raw, rating_threshold)
    stats["after_threshold"] = len(raw)
    raw = first_users(raw, max_users)
    raw, dups = deduplicate(raw)
    stats["duplicates_dropped"] = dups
    if dups:
        warnings.warn(
            f"{dups} duplicate (user, item) interactions in {raw.source or 'the data'}; kept the "
            "latest of each",
            stacklevel=2,
        )
    raw = k_core(raw, min_user_interactions, min_item_interactions)
    stats["after_k_core"] = len(raw)
    if len(raw) == 0:
        rules = []
        if rating_threshold is not None:
            rules.append(f"rating >= {rating_threshold}")
        if min_user_interactions > 1 or min_item_interactions > 1:
            rules.append(f"{min_user_interactions}-core users / {min_item_interactions}-core items")
        raise UserError(
            f"no interactions left after filtering ({', '.join(rules) or 'no filter'}) of "
            f"{stats['rows_read']} rows; lower recsys.rating_threshold or the k-core minimums"
        )
    return raw, stats
