"""Evaluation of text and image–text encoders: STS (Spearman / Pearson of cosine against human
scores), retrieval @ K of (query, relevant document) pairs, and the terminal table of both, with
the image–text task's zero-shot and cross-modal retrieval columns."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from torch import Tensor

from contrastkit.data.text.corpus import read_pairs, read_sts
from contrastkit.data.text.spec import TextConfig
from contrastkit.errors import UserError
from contrastkit.evaluate.retrieval import retrieval_metrics
from contrastkit.evaluate.sts import evaluate_sts
from contrastkit.evaluate.tables import format_table, pct

TRAINED, INITIAL = "trained", "initial"
M = TypeVar("M")


def before_and_after(
    trained: Callable[[], M], initial: Callable[[], M] | None, evaluate: Callable[[M], dict[str, Any]],
    *, verbose: bool = True,
) -> dict[str, Any]:
    """``{"encoders": {"trained": ..., "initial": ...}, "seconds": ...}``: ``evaluate`` of the
    trained model and (``initial`` given: ``eval.baselines``) of the model before training."""
    t0 = time.perf_counter()
    results: dict[str, Any] = {"encoders": {}}
    for name, make in [(TRAINED, trained), *([(INITIAL, initial)] if initial is not None else [])]:
        t1 = time.perf_counter()
        res = evaluate(make())
        res["seconds"] = time.perf_counter() - t1
        results["encoders"][name] = res
        if verbose:
            print(f"  evaluated {name} in {res['seconds']:.1f}s", flush=True)
    results["seconds"] = time.perf_counter() - t0
    return results


def evaluate_text_encoder(
    encode: Callable[[list[str]], Tensor], t: TextConfig, dims: Sequence[int] = ()
) -> dict[str, Any]:
    """STS on ``text.sts_file`` and retrieval on ``text.retrieval_file`` (those given) of one
    encoder, ``encode(texts) -> (N, D)``. ``dims``: the same again with the embeddings cut to
    their first d coordinates (each d; the metrics' cosine re-normalises them), under
    ``"dims": {"d": {...}}`` — every text is encoded once."""
    if not dims:
        return _evaluate(encode, t)
    full = _encoded_once(encode)
    out = _evaluate(full, t)

    def cut(d: int) -> Callable[[list[str]], Tensor]:
        def encode_d(texts: list[str]) -> Tensor:
            z = full(texts)
            if d > z.shape[1]:
                raise UserError(f"evaluation dim {d} exceeds the embedding width {z.shape[1]} (text.eval_dims)")
            return z[:, :d]

        return encode_d

    out["dims"] = {str(d): _evaluate(cut(d), t) for d in dims}
    return out


def _encoded_once(encode: Callable[[list[str]], Tensor]) -> Callable[[list[str]], Tensor]:
    """``encode`` remembering its answer per list of texts (the evaluations ask for the same lists)."""
    seen: dict[tuple[str, ...], Tensor] = {}

    def encode_once(texts: list[str]) -> Tensor:
        key = tuple(texts)
        if key not in seen:
            seen[key] = encode(texts)
        return seen[key]

    return encode_once


def _evaluate(encode: Callable[[list[str]], Tensor], t: TextConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if t.sts_file:
        sts = read_sts(t.sts_file, t.sts_columns, t.sts_filter, data_root=t.data_root)
        out["sts"] = evaluate_sts(encode, sts.sentences1, sts.sentences2, sts.scores)
    if t.retrieval_file:
        cols = t.retrieval_columns or ["sentence_A", "sentence_B"]
        pairs = read_pairs(t.retrieval_file, cols, t.retrieval_filter, data_root=t.data_root)
        out["retrieval"] = pair_retrieval(encode, pairs.anchors, pairs.positives, t.recall_k)
    return out


def pair_retrieval(
    encode: Callable[[list[str]], Tensor], queries: list[str], documents: list[str], ks: list[int]
) -> dict[str, Any]:
    """Retrieval @ K of (query, relevant document) pairs: each distinct query against every
    distinct document, its own documents relevant."""
    docs = list(dict.fromkeys(documents))
    where = {d: i for i, d in enumerate(docs)}
    relevant: dict[str, set[int]] = {}
    for q, d in zip(queries, documents, strict=True):
        relevant.setdefault(q, set()).add(where[d])
    distinct = list(relevant)
    out = retrieval_metrics(encode(distinct), encode(docs), [sorted(relevant[q]) for q in distinct], ks=ks)
    out["corpus"] = len(docs)
    return out


def _columns(first: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The table's columns for the sections an encoder's results hold: (label, section, key)."""
    cols: list[tuple[str, str, str]] = []
    if "sts" in first:
        cols += [("STS spearman", "sts", "spearman"), ("STS pearson", "sts", "pearson")]
    if "zero_shot" in first:
        cols.append(("zero-shot acc", "zero_shot", "accuracy"))
    for section, label in (("retrieval", ""), ("image_to_text", "i→t "), ("text_to_image", "t→i ")):
        if section in first:
            ks = sorted(int(k.split("@")[1]) for k in first[section] if k.startswith("hit@"))
            cols += [(f"{label}R@{k}", section, f"hit@{k}") for k in ks]
            if ks:
                cols += [(f"{label}MRR@{ks[-1]}", section, f"mrr@{ks[-1]}"), (f"{label}nDCG@{ks[-1]}", section, f"ndcg@{ks[-1]}")]
    return cols


def text_results_table(ev: dict[str, Any]) -> str:
    """One row per encoder (trained / initial), and one per encoder and evaluated dim ("trained
    @64"), values × 100."""
    enc = ev.get("encoders", {})
    if not enc:
        return "(nothing evaluated)"
    cols = _columns(next(iter(enc.values())))
    rows = []
    for name, r in enc.items():  # each encoder, then its embeddings cut to d coordinates (text.eval_dims)
        for label, res in [(name, r), *((f"{name} @{d}", rd) for d, rd in r.get("dims", {}).items())]:
            rows.append([label] + [pct(res.get(sec, {}).get(key)) for _, sec, key in cols])
    title = "evaluation (×100; R@K = share of queries with a relevant item in the top K):\n"
    return title + format_table(["encoder", *(c[0] for c in cols)], rows)


def text_compare_row(results: dict[str, Any]) -> dict[str, Any]:
    """A text or image–text run's headline figures (× 100, as in its table) for ``contrastkit
    compare`` and a sweep's final table: the trained encoder's STS Spearman, zero-shot accuracy,
    and of each retrieval section the smallest K's R@K and the largest K's nDCG@K."""
    trained = results.get("eval", {}).get("encoders", {}).get(TRAINED)
    if not trained:
        return {}
    row: dict[str, Any] = {}
    ranked: set[str] = set()  # the sections whose R@K column is taken (they come smallest K first)
    for label, sec, key in _columns(trained):
        smallest_k = key.startswith("hit@") and sec not in ranked
        ranked |= {sec} if key.startswith("hit@") else set()
        if label in ("STS spearman", "zero-shot acc") or key.startswith("ndcg@") or smallest_k:
            row[label] = pct(trained.get(sec, {}).get(key))
    return row
