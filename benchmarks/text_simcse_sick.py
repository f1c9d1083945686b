"""Unsupervised SimCSE on the SICK training sentences from all-MiniLM-L6-v2: contrastkit's
`sick-simcse` recipe against sentence-transformers (MultipleNegativesRankingLoss over (s, s)
pairs, benchmarks/st_simcse_anchor.py in its own virtual environment), interleaved in one run.

Both: the 4,789 distinct sentences of SICK TRAIN, one epoch of batch 64, learning rate 1e-5
with 10 % warm-up, temperature 0.05 (scale 20), max length 64, mean pooling, the same threads.
Both trained models (and MiniLM before training) are scored by the same evaluator: Spearman
and Pearson of cosine similarity with relatedness_score on the 4,906 SICK TEST pairs (SICK-R).

    python benchmarks/text_simcse_sick.py --anchor-python /path/to/venv-with-sentence-transformers/bin/python

Without --anchor-python, contrastkit alone; a quick check of the script:
``--max-pairs 200 --set train.max_steps=2``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from common import add_numbers, add_overrides, parser

from contrastkit.data.text.corpus import STSData, read_sentences, read_sts
from contrastkit.encoders.text import build_text_encoder, minilm_path
from contrastkit.evaluate.sts import evaluate_sts, sts_scores
from contrastkit.recipes import load_config
from contrastkit.runner import load_run, train_run

HERE = Path(__file__).resolve().parent


def sts_of(emb: np.ndarray, unique: list[str], sts: STSData) -> dict[str, float]:
    where = {s: i for i, s in enumerate(unique)}
    z = torch.from_numpy(emb)
    a = z[torch.tensor([where[s] for s in sts.sentences1])]
    b = z[torch.tensor([where[s] for s in sts.sentences2])]
    return sts_scores(a, b, sts.scores)


def run_ours(args: argparse.Namespace, work: Path, unique: list[str], sts: STSData) -> dict[str, float]:
    run_dir = work / f"ours-{time.time_ns()}"
    run_dir.mkdir()
    cfg = load_config(
        "sick-simcse",
        [
            f"train.num_threads={args.threads}",
            f"train.epochs={args.epochs}",
            "train.checkpoint_every=100000",
            "train.progress=false",
            f"text.data_root={args.data_root}" if args.data_root else "text.data_root=null",
            *args.set,
        ],
    )
    summary, _ = train_run(cfg, run_dir, progress=False, verbose=False)
    run = load_run(run_dir)
    run.model()  # loaded before the clock starts, as the anchor's model is
    t0 = time.perf_counter()
    emb = run.encode_texts(unique, batch_size=128).numpy()  # type: ignore[attr-defined]
    encode_seconds = time.perf_counter() - t0
    return {**sts_of(emb, unique, sts), "train_seconds": summary.seconds, "steps": summary.steps,
            "encode_seconds": encode_seconds}


def run_anchor(args: argparse.Namespace, work: Path, train_file: Path, test_file: Path, unique: list[str],
               sts: STSData) -> dict[str, float]:
    out = work / f"anchor-{time.time_ns()}.npy"
    cmd = [
        args.anchor_python, str(HERE / "st_simcse_anchor.py"), "--model", str(minilm_path()),
        "--train", str(train_file), "--test", str(test_file), "--out", str(out),
        "--epochs", str(args.epochs), "--threads", str(args.threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"anchor failed:\n{proc.stderr[-3000:]}")
    timing = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**sts_of(np.load(out), unique, sts), **timing}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--anchor-python", default=None,
                   help="python of a venv with sentence-transformers (default: contrastkit alone)")
    p.add_argument("--data-root", default=None, help="folder holding sick/SICK.txt (default: the usual places)")
    add_numbers(p, epochs=1, threads=1)
    p.add_argument("--rounds", type=int, default=1, help="ours/anchor pairs, alternating which goes first")
    p.add_argument("--max-pairs", type=int, default=None, help="score the first N test pairs only (a quick check)")
    add_overrides(p, "our recipe")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    sentences = read_sentences("sick:train", data_root=args.data_root)
    sts = read_sts("sick:test", data_root=args.data_root)
    if args.max_pairs:
        sts = STSData(sts.sentences1[: args.max_pairs], sts.sentences2[: args.max_pairs], sts.scores[: args.max_pairs])
    unique = list(dict.fromkeys([*sts.sentences1, *sts.sentences2]))
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "threads": args.threads, "train_sentences": len(sentences), "test_pairs": len(sts),
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_file, test_file = work / "train.txt", work / "test.txt"
        train_file.write_text("\n".join(sentences) + "\n")
        test_file.write_text("\n".join(unique) + "\n")
        t0 = time.perf_counter()
        before = build_text_encoder("minilm", max_length=64)
        results["before"] = {**evaluate_sts(lambda t: before.encode(t, batch_size=128), sts.sentences1,
                                            sts.sentences2, sts.scores), "encode_seconds": time.perf_counter() - t0}
        print(f"MiniLM before training: {json.dumps(results['before'])}", flush=True)
        runs: list[dict[str, object]] = []
        for r in range(args.rounds):
            order = ["ours", "anchor"] if r % 2 == 0 else ["anchor", "ours"]
            if not args.anchor_python:
                order.remove("anchor")
            for who in order:
                res = run_ours(args, work, unique, sts) if who == "ours" else run_anchor(
                    args, work, train_file, test_file, unique, sts)
                runs.append({"who": who, "round": r, **res})
                print(f"{who}: {json.dumps(res)}", flush=True)
        results["runs"] = runs
    for who in dict.fromkeys(str(r["who"]) for r in runs):
        mine = [r for r in runs if r["who"] == who]
        sp = np.mean([float(r["spearman"]) for r in mine])  # type: ignore[arg-type]
        secs = np.mean([float(r["train_seconds"]) for r in mine])  # type: ignore[arg-type]
        print(f"{who:>7}: SICK-R Spearman {100 * sp:.2f} (before {100 * results['before']['spearman']:.2f}), "  # type: ignore[index]
              f"train {secs:.0f} s")
    if args.anchor_python:
        ratio = np.mean([float(r["train_seconds"]) for r in runs if r["who"] == "anchor"]) / np.mean(  # type: ignore[arg-type]
            [float(r["train_seconds"]) for r in runs if r["who"] == "ours"])  # type: ignore[arg-type]
        print(f"anchor / ours training time: {ratio:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
