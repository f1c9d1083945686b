"""Skip-gram against gensim's Word2Vec (optimised C, multi-threaded), same corpus and settings.

Text: word2vec on a corpus (default: the Wikipedia sample that ships in gensim's test data,
tokenised by gensim's WikiCorpus), 100-d, window 5, 5 negatives, subsampling 1e-3, min_count 5,
5 epochs, the same threads: training tokens/s (raw corpus tokens × epochs / training seconds,
vocabulary building excluded for both) and WordSim-353 Spearman (gensim's copy of the file).
Histories: item2vec on MovieLens 100K with the ml100k-item2vec recipe's split and settings; gensim
trained on the same time-ordered training histories and scored the same way (mean over the
history of in·out + log P(item)); full-ranking Recall@20 / NDCG@20 on the test split. Then our
LightGCN and XSimGCL on the same split for reference.

    python benchmarks/word2vec_gensim.py --seeds 3 --threads 2 --out runs/bench-w2v

Needs gensim (pip install 'contrastkit[bench]'); ml-100k in ../shared/data/ml-100k or --ml100k.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def wiki_corpus(out: Path) -> Path:
    """gensim's Wikipedia sample as plain text, one article per line (tokenised by gensim)."""
    from gensim.corpora.wikicorpus import WikiCorpus
    from gensim.test.utils import datapath

    if out.is_file():
        return out
    wiki = WikiCorpus(datapath("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"), dictionary={}, processes=1)
    out.write_text("".join(" ".join(text) + "\n" for text in wiki.get_texts()))
    return out


def run_ours(recipe: str, sets: list[str], run: Path) -> dict[str, Any]:
    from contrastkit.config import load_config
    from contrastkit.runs import new_run_dir
    from contrastkit.tasks.runner import run_all

    cfg = load_config(recipe, [*sets, "train.progress=false"])
    return run_all(cfg, new_run_dir(cfg, str(run), resume=False), progress=False, verbose=False)


def text_benchmark(args: argparse.Namespace, corpus: Path, wordsim: Path, out: Path) -> list[dict[str, Any]]:
    from gensim.models import Word2Vec
    from gensim.models.word2vec import LineSentence

    rows = []
    sentences = LineSentence(str(corpus))
    for seed in range(args.seeds):
        res = run_ours("text-word2vec", [
            f"sequences.text_file={corpus}", "sequences.tokenizer=whitespace", f"sequences.similarity_file={wordsim}",
            f"train.seed={seed}", f"train.num_threads={args.threads}", *args.ours,
        ], out / f"ours-{seed}")
        tokens = res["eval"]["tokens"] * res["config"]["train"]["epochs"]
        rows.append({"library": "contrastkit", "seed": seed, "train_s": res["train"]["seconds"],
                     "tokens_per_s": tokens / res["train"]["seconds"], "wordsim": res["eval"]["similarity"]["spearman"],
                     "pairs": res["eval"]["similarity"]["pairs"]})
        model = Word2Vec(vector_size=100, window=5, negative=5, sg=1, min_count=5, sample=1e-3, workers=args.threads, seed=seed)
        model.build_vocab(sentences)
        t0 = time.perf_counter()
        model.train(sentences, total_examples=model.corpus_count, epochs=5)
        seconds = time.perf_counter() - t0
        ws = model.wv.evaluate_word_pairs(str(wordsim))
        rows.append({"library": "gensim", "seed": seed, "train_s": seconds, "tokens_per_s": model.corpus_total_words * 5 / seconds,
                     "wordsim": float(ws[1].statistic), "pairs": None})
        print(rows[-2], rows[-1], flush=True)
    return rows


def history_benchmark(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    from gensim.models import Word2Vec

    from contrastkit.data.interactions import InteractionData
    from contrastkit.data.sequences import corpus_from_histories
    from contrastkit.evaluate.ranking import embedding_scorer
    from contrastkit.tasks.recsys import evaluate_split
    from contrastkit.tasks.sequences import history_scorer

    rows = []
    root = f"recsys.root={args.ml100k}"
    for seed in range(args.seeds):
        res = run_ours("ml100k-item2vec", [root, f"train.seed={seed}", f"train.num_threads={args.threads}"], out / f"item2vec-{seed}")
        test = res["eval"]["test"]["skipgram"]
        rows.append({"model": "item2vec (contrastkit)", "seed": seed, "recall@20": test["recall@20"], "ndcg@20": test["ndcg@20"],
                     "train_s": res["train"]["seconds"]})
        data = InteractionData.load(out / f"item2vec-{seed}" / "data")
        corpus = corpus_from_histories(data.train, data.train_time, data.n_items, data.item_ids)
        sentences = [[str(t) for t in corpus.tokens[a:b]] for a, b in zip(corpus.offsets[:-1], corpus.offsets[1:], strict=True)]
        model = Word2Vec(vector_size=64, window=10, negative=5, sg=1, min_count=1, sample=1e-4, workers=args.threads, seed=seed)
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
        from contrastkit.config import load_config

        cfg = load_config("ml100k-item2vec", [root])
        metrics = evaluate_split(embedding_scorer(users, items), data, cfg, "test", torch.device("cpu"))
        rows.append({"model": "item2vec (gensim)", "seed": seed, "recall@20": metrics["recall@20"], "ndcg@20": metrics["ndcg@20"],
                     "train_s": seconds})
        print(rows[-2], rows[-1], flush=True)
    for recipe in ("ml100k-lightgcn", "ml100k-xsimgcl"):
        res = run_ours(recipe, [root, "train.num_threads=1"], out / recipe)
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
    parser.add_argument("--ml100k", default=str(HERE.parents[1] / "shared" / "data" / "ml-100k"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="ours", action="append", default=[], help="override for our word2vec recipe")
    parser.add_argument("--out", default="runs/bench-w2v")
    args = parser.parse_args()
    from gensim.test.utils import datapath

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = Path(args.corpus) if args.corpus else wiki_corpus(out / "wiki.txt")
    wordsim = Path(args.wordsim or datapath("wordsim353.tsv"))
    text = text_benchmark(args, corpus, wordsim, out)
    histories = history_benchmark(args, out) if Path(args.ml100k, "u.data").is_file() else []
    (out / "results.json").write_text(json.dumps({"text": text, "histories": histories}, indent=2))
    print("\n| library | train s | tokens/s | WordSim-353 Spearman | seeds |")
    print("\n".join(summary(text, "library", ["train_s", "tokens_per_s", "wordsim"])))
    if histories:
        print("\n| model | Recall@20 | NDCG@20 | train s | seeds |")
        print("\n".join(summary(histories, "model", ["recall@20", "ndcg@20", "train_s"])))
    print(f"\nnumpy {np.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
