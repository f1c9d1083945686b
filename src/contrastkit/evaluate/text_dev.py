"""The text task's validation split: a dev set evaluated during training.

``text.dev_file`` with three ``text.dev_columns`` (sentence1, sentence2, score; the default is
``text.sts_columns``) is an STS dev set: the metric is ``dev_sts_spearman``. With two columns
(query, document) it is a retrieval dev set: ``dev_mrr@K`` (K the largest of
``text.recall_k``). Without a dev file, a seeded slice of the training pairs (``text.dev_fraction``
of the anchors, with all their pairs) is held out of training, written to the run's
``data/dev_pairs.jsonl`` and used as a retrieval dev set. Every metric is better when higher.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from contrastkit.data.text.corpus import STSData, TextPairs, read_pairs, read_sts
from contrastkit.data.text.spec import TextConfig
from contrastkit.errors import UserError
from contrastkit.evaluate.sts import evaluate_sts
from contrastkit.evaluate.text import pair_retrieval

DEV_DIRECTION = "max"  # every dev metric of the text task is better when higher
HOLDOUT_FILE = Path("data") / "dev_pairs.jsonl"


def dev_columns(t: TextConfig) -> list[str]:
    """The dev file's columns: ``text.dev_columns``, else ``text.sts_columns``."""
    return list(t.dev_columns or t.sts_columns)


def dev_metric(t: TextConfig) -> str:
    """The name of the text task's validation metric for this config (higher is better)."""
    if t.dev_file and len(dev_columns(t)) == 3:
        return "dev_sts_spearman"
    return f"dev_mrr@{max(t.recall_k)}"


@dataclass
class DevSet:
    """Dev data read once: scored pairs (STS) or (query, document) pairs (retrieval)."""

    data: STSData | TextPairs
    metric: str
    source: str

    def __len__(self) -> int:
        return len(self.data)

    def evaluate(self, encode: Callable[[list[str]], Tensor], ks: list[int]) -> float:
        """The dev metric of an encoder ``encode(texts) -> (N, D)``."""
        if isinstance(self.data, STSData):
            return float(evaluate_sts(encode, self.data.sentences1, self.data.sentences2, self.data.scores)["spearman"])
        return float(pair_retrieval(encode, self.data.anchors, self.data.positives, ks)[f"mrr@{max(ks)}"])

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "size": len(self)}


def read_dev_set(t: TextConfig) -> DevSet:
    """The dev set of ``text.dev_file`` (see the module's text)."""
    if not t.dev_file:
        raise UserError("no text.dev_file: the dev set is held out of the training pairs")
    cols = dev_columns(t)
    data: STSData | TextPairs
    if len(cols) == 3:
        data = read_sts(t.dev_file, cols, t.dev_filter, data_root=t.data_root)
    else:
        data = read_pairs(t.dev_file, cols, t.dev_filter, data_root=t.data_root)
    return DevSet(data, dev_metric(t), t.dev_file)


def hold_out(
    columns: Sequence[Sequence[str]], fraction: float, seed: int
) -> tuple[list[list[str]], TextPairs]:
    """Split aligned (anchor, positive[, negative]) columns into training columns and held-out
    (anchor, positive) pairs: a seeded ``fraction`` of the distinct anchors, with every pair of
    theirs (an anchor is never on both sides)."""
    anchors = list(dict.fromkeys(columns[0]))
    n_dev = max(2, round(fraction * len(anchors)))
    if len(anchors) - n_dev < 2:
        raise UserError(
            f"the training pairs have {len(anchors)} distinct anchors: too few to hold out a dev set; give text.dev_file"
        )
    held = set(random.Random(seed).sample(anchors, n_dev))
    keep = [i for i, a in enumerate(columns[0]) if a not in held]
    dev = [i for i, a in enumerate(columns[0]) if a in held]
    train = [[col[i] for i in keep] for col in columns]
    return train, TextPairs([columns[0][i] for i in dev], [columns[1][i] for i in dev])


def write_holdout(pairs: TextPairs, run_dir: Path) -> Path:
    """The held-out pairs as RUN_DIR/data/dev_pairs.jsonl (anchor, positive): the run records its
    validation split."""
    path = Path(run_dir) / HOLDOUT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for a, p in zip(pairs.anchors, pairs.positives, strict=True):
            handle.write(json.dumps({"anchor": a, "positive": p}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path
