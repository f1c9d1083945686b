"""Skip-gram against gensim's Word2Vec (optimised C, multi-threaded), same corpus and settings.

Text: word2vec on a corpus (default: the Wikipedia sample that ships in gensim's test data,
tokenised by gensim's WikiCorpus), 100-d, window 5, 5 negatives, subsampling 1e-3, min_count 5,
5 epochs, the same threads: training tokens/s (the corpus file's tokens × epochs / training
seconds for both — tokens below min_count included, as gensim counts them; vocabulary building
excluded for both) and WordSim-353 Spearman (gensim's copy of the file). Ours with each of
``--kernels``: ``numba`` (the compiled per-pair kernel, what ``method.kernel: auto`` picks on a
CPU) and ``torch`` (the batched PyTorch path). Each seed runs every contender in turn, so that
all see the same load; the load average is printed before and after.
Histories: item2vec on MovieLens 100K with the ml100k-item2vec recipe's split and settings; gensim
trained on the same time-ordered training histories and scored the same way (mean over the
history of in·out + log P(item)); full-ranking Recall@20 / NDCG@20 on the test split. Then our
LightGCN and XSimGCL on the same split for reference (``--parts``).

    python benchmarks/word2vec_gensim.py --seeds 3 --threads 2 --out runs/bench-w2v

Needs gensim (pip install 'contrastkit[bench]') for its rows, its Wikipedia sample and its
WordSim-353 file; without it, contrastkit's rows alone (text with --corpus and --wordsim).
ml-100k in ../shared/data/ml-100k or --ml100k (the history part is left out without it).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import SHARED_DATA, add_overrides, run_recipe

GENSIM = importlib.util.find_spec("gensim") is not None  # without it: contrastkit's rows alone


def gensim_data(name: str) -> Path:
    """A file of gensim's test data."""
    from gensim.test.utils import datapath

    return Path(datapath(name))


def wiki_corpus(out: Path) -> Path:
    """gensim's Wikipedia sample as plain text, one article per line (tokenised by gensim)."""
    from gensim.corpora.wikicorpus import WikiCorpus

    if out.is_file():
        return out
    dump = gensim_data("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    wiki = WikiCorpus(dump, dictionary={}, processes=1)
    out.write_text("".join(" ".join(text) + "\n" for text in wiki.get_texts()))
    return out


KERNELS = {"numba": "contrastkit (numba kernel)", "torch": "contrastkit (PyTorch)"}


def load() -> str:
    """The machine's load averages over 1, 5 and 15 minutes (as `uptime` prints them)."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def text_benchmark(args: argparse.Namespace, corpus: Path, wordsim: Path, out: Path) -> list[dict[str, Any]]:
    rows = []
    with corpus.open(encoding="utf-8") as lines:
        raw_tokens = sum(len(line.split()) for line in lines)  # what gensim counts (corpus_total_words)
    for seed in range(args.seeds):
        for kernel in args.kernels:
            res, _, _ = run_recipe("text-word2vec", [
                f"sequences.text_file={corpus}", "sequences.tokenizer=whitespace", f"sequences.similarity_file={wordsim}",
                f"train.seed={seed}", f"train.num_threads={args.threads}", f"method.kernel={kernel}", *args.ours,
            ], out / f"ours-{kernel}-{seed}")
            seconds = res["train"]["seconds"]
            rows.append({"library": KERNELS[kernel], "seed": seed, "train_s": seconds,
                         "tokens_per_s": raw_tokens * res["config"]["train"]["epochs"] / seconds,
                         "wordsim": res["eval"]["similarity"]["spearman"], "pairs": res["eval"]["similarity"]["pairs"]})
            print(rows[-1], flush=True)
        if not GENSIM:
            continue
        from gensim.models import Word2Vec
        from gensim.models.word2vec import LineSentence

        sentences = LineSentence(str(corpus))
        model = Word2Vec(vector_size=100, window=5, negative=5, sg=1, min_count=5, sample=1e-3, workers=args.threads, seed=seed)
        model.build_vocab(sentences)
        t0 = time.perf_counter()
        model.train(sentences, total_examples=model.corpus_count, epochs=5)
        seconds = time.perf_counter() - t0
        ws = model.wv.evaluate_word_pairs(str(wordsim))
        assert model.corpus_total_words == raw_tokens, (model.corpus_total_words, raw_tokens)
        rate = model.corpus_total_words * 5 / seconds
        rows.append({"library": "gensim", "seed": seed, "train_s": seconds, "tokens_per_s": rate,
                     "wordsim": float(ws[1].statistic), "pairs": None})
        print(rows[-1], flush=True)
    return rows


def gensim_item2vec(run_dir: Path, seed: int, threads: int) -> dict[str, Any]:
    """gensim's skip-gram on the time-ordered training histories of our item2vec run's split,
    scored as ours (:func:`history_scorer`) on its test split."""
    from gensim.models import Word2Vec

    from contrastkit.data.interactions.spec import saved_split
    from contrastkit.data.sequences import corpus_from_histories
    from contrastkit.evaluate.ranking import embedding_scorer
    from contrastkit.evaluate.recommendation import split_metrics
    from contrastkit.recipes import read_run_config
    from contrastkit.tasks.sequences import history_scorer

    data = saved_split(run_dir)
    corpus = corpus_from_histories(data.train, data.train_time, data.n_items, data.item_ids)
    sentences = [[str(t) for t in corpus.tokens[a:b]] for a, b in zip(corpus.offsets[:-1], corpus.offsets[1:], strict=True)]
    model = Word2Vec(vector_size=64, window=10, negative=5, sg=1, min_count=1, sample=1e-4, workers=threads, seed=seed)
    model.build_vocab(sentences)
    t0 = time.perf_counter()
    model.train(sentences, total_examples=len(sentences), epochs=20)
    seconds = time.perf_counter() - t0
    order = [model.wv.key_to_index.get(str(i)) for i in range(data.n_items)]
    inputs = torch.zeros(data.n_items, 64)
    outputs = torch.zeros(data.n_items, 64)
    for i, k in enumerate(order):
        if k is not None:
            inputs[i] = torch.from_numpy(model.wv.vectors[k])
            outputs[i] = torch.from_numpy(model.syn1neg[k])
    users, items = history_scorer(inputs, outputs, data.train, data.n_users)
    recsys = read_run_config(run_dir).recsys
    metrics = split_metrics(embedding_scorer(users, items), data, recsys, "test", torch.device("cpu"))
    return {"model": "item2vec (gensim)", "seed": seed, "recall@20": metrics["recall@20"], "ndcg@20": metrics["ndcg@20"],
            "train_s": seconds}


def history_benchmark(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    rows = []
    root = f"recsys.root={args.ml100k}"
    for seed in range(args.seeds):
        mine = []
        for kernel in args.kernels:
            res, run_dir, _ = run_recipe("ml100k-item2vec", [root, f"train.seed={seed}", f"train.num_threads={args.threads}",
                                                             f"method.kernel={kernel}"], out / f"item2vec-{kernel}-{seed}")
            test = res["eval"]["test"]["skipgram"]
            mine.append({"model": f"item2vec {KERNELS[kernel]}", "seed": seed, "recall@20": test["recall@20"],
                         "ndcg@20": test["ndcg@20"], "train_s": res["train"]["seconds"]})
        if GENSIM:
            mine.append(gensim_item2vec(run_dir, seed, args.threads))
        rows += mine
        print(*mine, flush=True)
    if "graphs" not in args.parts:
        return rows
    for recipe in ("ml100k-lightgcn", "ml100k-xsimgcl"):
        res, _, _ = run_recipe(recipe, [root, "train.num_threads=1"], out / recipe)
        test = res["eval"]["test"][res["config"]["method"]["name"]]
        rows.append({"model": f"{recipe.split('-')[1]} (contrastkit)", "seed": 0, "recall@20": test["recall@20"],
                     "ndcg@20": test["ndcg@20"], "train_s": res["train"]["seconds"]})
        pop = res["eval"]["test"]["popularity"]
        print(rows[-1], flush=True)
    rows.append({"model": "popularity", "seed": 0, "recall@20": pop["recall@20"], "ndcg@20": pop["ndcg@20"], "train_s": 0.0})
    return rows


def summary(rows: list[dict[str, Any]], key: str, fields: list[str]) -> list[str]:
    lines = []
    for name in dict.fromkeys(r[key] for r in rows):
        mine = [r for r in rows if r[key] == name]
        parts = []
        for f in fields:
            values = [r[f] for r in mine]
            mean = statistics.mean(values)
            spread = f" ± {statistics.stdev(values):.3g}" if len(values) > 1 else ""
            parts.append(f"{mean:.4g}{spread}")
        lines.append(f"| {name} | " + " | ".join(parts) + f" | {len(mine)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=None, help="a text file (default: gensim's Wikipedia sample)")
    parser.add_argument("--wordsim", default=None, help="WordSim-353 TSV (default: gensim's test data)")
    parser.add_argument("--ml100k", default=str(SHARED_DATA / "ml-100k"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=list(KERNELS), help="our training paths")
    parser.add_argument("--parts", nargs="+", default=["text", "histories", "graphs"], choices=["text", "histories", "graphs"],
                        help="word2vec, item2vec, and LightGCN / XSimGCL on the item2vec split")
    add_overrides(parser, "our word2vec recipe", dest="ours")
    parser.add_argument("--out", default="runs/bench-w2v")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not GENSIM:
        print("gensim is not installed: its rows are left out (and --corpus, --wordsim have no default)", flush=True)
    corpus = Path(args.corpus) if args.corpus else wiki_corpus(out / "wiki.txt") if GENSIM else None
    wordsim = Path(args.wordsim) if args.wordsim else gensim_data("wordsim353.tsv") if GENSIM else None
    before = load()
    print(f"load average before: {before}", flush=True)
    text = text_benchmark(args, corpus, wordsim, out) if corpus and wordsim and "text" in args.parts else []
    histories = (history_benchmark(args, out) if Path(args.ml100k, "u.data").is_file() and "histories" in args.parts
                 else [])
    after = load()
    (out / "results.json").write_text(json.dumps({"text": text, "histories": histories, "load_before": before,
                                                  "load_after": after}, indent=2))
    if text:
        print("\n| library | train s | tokens/s | WordSim-353 Spearman | seeds |")
        print("\n".join(summary(text, "library", ["train_s", "tokens_per_s", "wordsim"])))
    if histories:
        print("\n| model | Recall@20 | NDCG@20 | train s | seeds |")
        print("\n".join(summary(histories, "model", ["recall@20", "ndcg@20", "train_s"])))
    versions = [f"numpy {np.__version__}", f"torch {torch.__version__}"]
    for name in ("numba", "gensim"):
        if importlib.util.find_spec(name) is not None:
            versions.append(f"{name} {importlib.import_module(name).__version__}")
    print(f"\n{', '.join(versions)}; load average before {before}, after {after} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
