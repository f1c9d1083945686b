"""Supervised sentence embeddings on SICK from all-MiniLM-L6-v2, contrastkit against
sentence-transformers (benchmarks/st_pairs_anchor.py), the same number of steps each:

- ``mnrl``: in-batch negatives on the SICK TRAIN pairs labelled ENTAILMENT — our
  ``simcse_supervised`` (recipe ``sick-pairs``) and their MultipleNegativesRankingLoss, both
  with temperature 0.05 (scale 20);
- ``mnrl-nodup``: the same with batches that hold no text twice (``text.batch_sampler:
  no_duplicates`` / their NoDuplicatesBatchSampler);
- ``cosent``: CoSENT (scale 20) on all SICK TRAIN pairs and their relatedness scores — our
  ``cosent`` (recipe ``sick-cosent``) and their CoSENTLoss.

Both: ``--max-steps`` steps of ``--batch-size`` pairs, learning rate 2e-5 with 10 % warm-up (ours:
cosine decay; theirs: linear), no weight decay, max length 64, mean pooling, the same threads.
Scored by one evaluator: Spearman of cosine similarity with relatedness_score on the 4,906 SICK
TEST pairs (SICK-R); texts/s = 2 x pairs trained / training seconds.

    python benchmarks/text_pairs_sick.py --anchor-python "$(which python)"   # sentence-transformers there

Without --anchor-python, contrastkit alone; a quick check: ``--max-pairs 200 --max-steps 2``.
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
from text_simcse_sick import sts_of

from contrastkit.data.text.corpus import STSData, read_pairs, read_sts
from contrastkit.encoders.text import minilm_path
from contrastkit.recipes import load_config
from contrastkit.runner import load_run, train_run

HERE = Path(__file__).resolve().parent
LOSSES = {  # our recipe and overrides, their loss and batch sampler
    "mnrl": ("sick-pairs", [], "mnrl", "batch_sampler"),
    "mnrl-nodup": ("sick-pairs", ["text.batch_sampler=no_duplicates"], "mnrl", "no_duplicates"),
    "cosent": ("sick-cosent", [], "cosent", "batch_sampler"),
}


def run_ours(args: argparse.Namespace, loss: str, work: Path, unique: list[str], sts: STSData) -> dict[str, float]:
    recipe, sets, _, _ = LOSSES[loss]
    run_dir = work / f"ours-{time.time_ns()}"
    run_dir.mkdir()
    cfg = load_config(recipe, [
        f"train.num_threads={args.threads}", f"train.max_steps={args.max_steps}", f"train.batch_size={args.batch_size}",
        f"optim.lr={args.lr}", "train.checkpoint_every=100000", "train.progress=false", "train.loggers=[csv]",
        f"text.data_root={args.data_root}" if args.data_root else "text.data_root=null", *sets, *args.set,
    ])
    summary, _ = train_run(cfg, run_dir, progress=False, verbose=False)
    run = load_run(run_dir)
    run.model()  # loaded before the clock starts, as the anchor's model is
    t0 = time.perf_counter()
    emb = run.encode_texts(unique, batch_size=128).numpy()  # type: ignore[attr-defined]
    return {**sts_of(emb, unique, sts), "train_seconds": summary.seconds, "steps": summary.steps,
            "encode_seconds": time.perf_counter() - t0}


def run_anchor(args: argparse.Namespace, loss: str, work: Path, train: dict[str, Path], test_file: Path,
               unique: list[str], sts: STSData) -> dict[str, float]:
    _, _, kind, sampler = LOSSES[loss]
    out = work / f"anchor-{time.time_ns()}.npy"
    cmd = [
        args.anchor_python, str(HERE / "st_pairs_anchor.py"), "--model", str(minilm_path()), "--train", str(train[kind]),
        "--loss", kind, "--batch-sampler", sampler, "--test", str(test_file), "--out", str(out),
        "--max-steps", str(args.max_steps), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
        "--threads", str(args.threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    if proc.returncode != 0:
        sys.exit(f"anchor failed:\n{proc.stderr[-3000:]}")
    return {**sts_of(np.load(out), unique, sts), **json.loads(proc.stdout.strip().splitlines()[-1])}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--anchor-python", default=None, help="python with sentence-transformers (default: contrastkit alone)")
    p.add_argument("--data-root", default=None, help="folder holding sick/SICK.txt (default: the usual places)")
    p.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    add_numbers(p, max_steps=20, batch_size=32, lr=2e-5, threads=1)
    p.add_argument("--max-pairs", type=int, default=None, help="score the first N test pairs only (a quick check)")
    add_overrides(p, "our recipes")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    pairs = read_pairs("sick:train", ["sentence_A", "sentence_B"], {"entailment_label": "ENTAILMENT"}, data_root=args.data_root)
    scored = read_sts("sick:train", data_root=args.data_root)
    sts = read_sts("sick:test", data_root=args.data_root)
    if args.max_pairs:
        sts = STSData(sts.sentences1[: args.max_pairs], sts.sentences2[: args.max_pairs], sts.scores[: args.max_pairs])
    unique = list(dict.fromkeys([*sts.sentences1, *sts.sentences2]))
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "load_average": os.getloadavg(), "threads": args.threads, "steps": args.max_steps,
        "batch_size": args.batch_size, "train_pairs": len(pairs), "scored_pairs": len(scored), "test_pairs": len(sts),
    }
    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train = {"mnrl": work / "pairs.tsv", "cosent": work / "scored.tsv"}
        train["mnrl"].write_text("a\tb\n" + "".join(f"{a}\t{b}\n" for a, b in zip(pairs.anchors, pairs.positives, strict=True)))
        train["cosent"].write_text("a\tb\tscore\n" + "".join(
            f"{a}\t{b}\t{s}\n" for a, b, s in zip(scored.sentences1, scored.sentences2, scored.scores, strict=True)))
        test_file = work / "test.txt"
        test_file.write_text("\n".join(unique) + "\n")
        for i, loss in enumerate(args.losses):
            order = ["ours", "anchor"] if i % 2 == 0 else ["anchor", "ours"]
            for who in order if args.anchor_python else ["ours"]:
                res = run_ours(args, loss, work, unique, sts) if who == "ours" else run_anchor(
                    args, loss, work, train, test_file, unique, sts)
                res["texts_per_sec"] = 2 * args.batch_size * float(res["steps"]) / float(res["train_seconds"])
                runs.append({"who": who, "loss": loss, **res})
                print(f"{loss} {who}: {json.dumps(res)}", flush=True)
    results["runs"] = runs
    results["load_average_after"] = os.getloadavg()
    print("\n| loss | who | SICK-R Spearman | texts/s | steps |\n|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['loss']} | {r['who']} | {100 * float(r['spearman']):.2f} | {float(r['texts_per_sec']):.1f} | {r['steps']} |")  # type: ignore[arg-type]
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
