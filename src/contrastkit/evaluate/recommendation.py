"""Evaluation of recommenders on a run's interaction split: full ranking of every item for the
users of the validation or test split (items the user has in training — and on test, in
validation — masked), against a popularity baseline, and the table of it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from contrastkit.data.interactions import InteractionData
from contrastkit.data.interactions.spec import RecsysConfig, split_protocol
from contrastkit.evaluate.ranking import ScoreFn, popularity_scorer, ranking_metrics
from contrastkit.evaluate.tables import format_table


def split_metrics(scorer: ScoreFn, data: InteractionData, r: RecsysConfig, split: str, device: torch.device) -> dict[str, float]:
    """Full-ranking metrics on the valid split (train masked) or test split (train + valid masked)."""
    exclude = [data.train] if split == "valid" else [data.train, data.valid]
    targets = data.valid if split == "valid" else data.test
    return ranking_metrics(
        scorer, data.n_users, data.n_items, targets, exclude, ks=r.eval_ks,
        popularity=data.item_popularity(), block_users=r.eval_block_users, device=device,
    )


def evaluate_recommender(
    name: str, scorer: ScoreFn, data: InteractionData, r: RecsysConfig, device: torch.device, *, scoring: str = "",
    verbose: bool = False, where: Path | None = None,
) -> dict[str, Any]:
    """Test and validation metrics of a recommender ``name`` and of the popularity baseline,
    with the protocol (``scoring``: how the model scores, when it needs saying) and the
    seconds it took (printed with ``verbose``, naming the run folder ``where``)."""
    t0 = time.perf_counter()
    scorers = {name: scorer, "popularity": popularity_scorer(data.item_popularity())}
    out: dict[str, Any] = {
        "model": name,
        "protocol": f"{split_protocol(r)}; full ranking over {data.n_items} items; {scoring}"
        "train items masked (and valid items on test)",
        "data": data.stats,
    }
    for split in ("test", "valid"):
        out[split] = {key: split_metrics(s, data, r, split, device) for key, s in scorers.items()}
    out["seconds"] = time.perf_counter() - t0
    if verbose:
        print(f"evaluated {where} in {out['seconds']:.1f}s", flush=True)
    return out


def fmt_metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def ranking_table(ev: dict[str, Any], split: str = "test") -> str:
    """Recall / NDCG at every K and the other metrics at K=20 (or the middle K), one row per model."""
    rows_in = ev.get(split, {})
    if not rows_in:
        return "(no ranking evaluation)"
    first = next(iter(rows_in.values()))
    ks = sorted({int(k.split("@")[1]) for k in first if k.startswith("recall@")})
    k_main = 20 if 20 in ks else ks[len(ks) // 2]
    cols = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")]
    cols += [f"{m}@{k_main}" for m in ("precision", "hit", "mrr", "coverage", "tail")]
    rows = [[name] + [fmt_metric(r.get(c)) for c in cols] for name, r in rows_in.items()]
    users = int(first.get("users", 0))
    return f"{split} split ({users} users; {ev.get('protocol')}):\n" + format_table(["model", *cols], rows)
