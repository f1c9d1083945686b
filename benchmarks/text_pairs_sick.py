"""Supervised sentence embeddings on SICK from all-MiniLM-L6-v2, contrastkit against
sentence-transformers (benchmarks/st_pairs_anchor.py), the same number of steps each:

- ``mnrl``: in-batch negatives on the SICK TRAIN pairs labelled ENTAILMENT — our
  ``simcse_supervised`` (recipe ``sick-pairs``) and their MultipleNegativesRankingLoss, both
  with temperature 0.05 (scale 20);
- ``mnrl-nodup``: the same with batches that hold no text twice (``text.batch_sampler:
  no_duplicates`` / their NoDuplicatesBatchSampler);
- ``mnrl-mined``: the same on (anchor, positive, negative) rows: for each entailment pair one hard
  negative mined once, before the contenders train, from the SICK TRAIN sentences with
  all-MiniLM-L6-v2 through ``contrastkit mine`` (``mine_with_encoder``: ranks 3–30 of the nearest
  texts, the anchor's known positives left out, and with margin 0.05 none whose cosine to the
  anchor is within 0.05 of the positive's); both train on that file — ours ``simcse_supervised``
  with ``text.train_columns: [anchor, positive, negative]``, theirs MultipleNegativesRankingLoss
  on the three columns;
- ``cosent``: CoSENT (scale 20) on all SICK TRAIN pairs and their relatedness scores — our
  ``cosent`` (recipe ``sick-cosent``) and their CoSENTLoss.

Both: ``--max-steps`` steps of ``--batch-size`` pairs, learning rate 2e-5 with 10 % warm-up (ours:
cosine decay; theirs: linear), no weight decay, max length 64, mean pooling, the same threads.
Scored by one evaluator: Spearman of cosine similarity with relatedness_score on the 4,906 SICK
TEST pairs (SICK-R); texts/s = texts per row (2, or 3 with a negative) x rows trained / training
seconds. ``--seeds N`` trains every contender N times (seeds 0 .. N-1, or ``--first-seed`` F ..
F+N-1: train.seed / --seed; the order ours / theirs alternates from loss to loss and seed to
seed); the table gives mean ± sd over the seeds. MiniLM before training is scored once by the
same evaluator.

    python benchmarks/text_pairs_sick.py --anchor-python "$(which python)"   # sentence-transformers there

Without --anchor-python, contrastkit alone; a quick check: ``--max-pairs 200 --max-steps 2``.
``--losses`` picks some of mnrl, mnrl-nodup, mnrl-mined, cosent. ``--same-batches`` checks the
training itself rather than a seed's luck: every dropout off on both sides, the anchor trains
first and writes down its batches, and ours trains on the same batches in the same order (our
loader's first epoch replayed); the two models should then score the same.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from common import add_numbers, add_overrides, parser
from text_simcse_sick import sts_of

from contrastkit.data.text import loader as text_loader
from contrastkit.data.text.corpus import STSData, read_pairs, read_sts
from contrastkit.encoders.text import load_pretrained_text_encoder, minilm_path
from contrastkit.index.mining import mine_with_encoder
from contrastkit.recipes import load_config
from contrastkit.runner import load_run, train_run

HERE = Path(__file__).resolve().parent
TRIPLES = "triples.tsv"  # the mined rows, in the work folder
LOSSES = {  # our recipe and overrides, their loss (= the training file's kind) and batch sampler
    "mnrl": ("sick-pairs", [], "mnrl", "batch_sampler"),
    "mnrl-nodup": ("sick-pairs", ["text.batch_sampler=no_duplicates"], "mnrl", "no_duplicates"),
    "mnrl-mined": ("sick-pairs", [f"text.train_file={{work}}/{TRIPLES}", "text.train_filter=null",
                                  "text.train_columns=[anchor, positive, negative]"], "triples", "batch_sampler"),
    "cosent": ("sick-cosent", [], "cosent", "batch_sampler"),
}
TEXTS_PER_ROW = {"mnrl": 2, "triples": 3, "cosent": 2}
MINING = {"negatives": 1, "range_min": 2, "range_max": 30, "margin": 0.05}


@contextlib.contextmanager
def replayed_batches(batches_file: Path | None) -> Iterator[None]:
    """Within: our text loader's first epoch starts with the batches written to ``batches_file``
    (by the anchor's ``--record-batches``), the other rows after them; without a file, as it is."""
    if batches_file is None:
        yield
        return
    first = [i for batch in json.loads(batches_file.read_text()) for i in batch]
    if len(set(first)) != len(first):
        sys.exit("--same-batches needs --max-steps within one epoch (the anchor's batches repeat rows)")

    def full_permutation(self: Any, epoch: int) -> torch.Tensor:
        taken = set(first)
        return torch.tensor(first + [i for i in range(self.n) if i not in taken])

    original = text_loader._SeededLoader.full_permutation
    text_loader._SeededLoader.full_permutation = full_permutation  # type: ignore[method-assign]
    try:
        yield
    finally:
        text_loader._SeededLoader.full_permutation = original  # type: ignore[method-assign]


def run_ours(args: argparse.Namespace, loss: str, seed: int, work: Path, unique: list[str], sts: STSData,
             batches_file: Path | None = None) -> dict[str, float]:
    recipe, sets, _, _ = LOSSES[loss]
    sets = [s.format(work=work) for s in sets] + (["text.dropout=0.0"] if batches_file else [])
    run_dir = work / f"ours-{time.time_ns()}"
    run_dir.mkdir()
    cfg = load_config(recipe, [
        f"train.num_threads={args.threads}", f"train.max_steps={args.max_steps}", f"train.batch_size={args.batch_size}",
        f"optim.lr={args.lr}", f"train.seed={seed}", "train.checkpoint_every=100000", "train.progress=false",
        "train.loggers=[csv]",
        f"text.data_root={args.data_root}" if args.data_root else "text.data_root=null", *sets, *args.set,
    ])
    with replayed_batches(batches_file):
        summary, _ = train_run(cfg, run_dir, progress=False, verbose=False)
    run = load_run(run_dir)
    run.model()  # loaded before the clock starts, as the anchor's model is
    t0 = time.perf_counter()
    emb = run.encode_texts(unique, batch_size=128).numpy()  # type: ignore[attr-defined]
    return {**sts_of(emb, unique, sts), "train_seconds": summary.seconds, "steps": summary.steps,
            "encode_seconds": time.perf_counter() - t0}


def run_anchor(args: argparse.Namespace, loss: str, seed: int, work: Path, train: dict[str, Path], test_file: Path,
               unique: list[str], sts: STSData, batches_file: Path | None = None) -> dict[str, float]:
    _, _, kind, sampler = LOSSES[loss]
    out = work / f"anchor-{time.time_ns()}.npy"
    cmd = [
        args.anchor_python, str(HERE / "st_pairs_anchor.py"), "--model", str(minilm_path()), "--train", str(train[kind]),
        "--loss", kind, "--batch-sampler", sampler, "--test", str(test_file), "--out", str(out),
        "--max-steps", str(args.max_steps), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
        "--threads", str(args.threads), "--seed", str(seed),
        *(["--no-dropout", "--record-batches", str(batches_file)] if batches_file else []),
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
    p.add_argument("--seeds", type=int, default=1, help="train every contender with N seeds (mean ± sd)")
    p.add_argument("--first-seed", type=int, default=0, help="the seeds are FIRST .. FIRST+N-1 (to add seeds to a run)")
    p.add_argument("--same-batches", action="store_true",
                   help="a check of the training itself: both sides train without dropout on the same batches "
                        "(the anchor's, replayed in ours), so what is left is the implementations")
    add_overrides(p, "our recipes")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()
    if args.same_batches and not args.anchor_python:
        p.error("--same-batches needs --anchor-python (the anchor chooses the batches)")

    torch.set_num_threads(args.threads)
    pairs = read_pairs("sick:train", ["sentence_A", "sentence_B"], {"entailment_label": "ENTAILMENT"}, data_root=args.data_root)
    scored = read_sts("sick:train", data_root=args.data_root)
    sts = read_sts("sick:test", data_root=args.data_root)
    if args.max_pairs:
        sts = STSData(sts.sentences1[: args.max_pairs], sts.sentences2[: args.max_pairs], sts.scores[: args.max_pairs])
    unique = list(dict.fromkeys([*sts.sentences1, *sts.sentences2]))
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "load_average": os.getloadavg(), "threads": args.threads, "steps": args.max_steps, "same_batches": args.same_batches,
        "batch_size": args.batch_size, "train_pairs": len(pairs), "scored_pairs": len(scored), "test_pairs": len(sts),
    }
    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train = {"mnrl": work / "pairs.tsv", "cosent": work / "scored.tsv", "triples": work / TRIPLES}
        train["mnrl"].write_text("a\tb\n" + "".join(f"{a}\t{b}\n" for a, b in zip(pairs.anchors, pairs.positives, strict=True)))
        train["cosent"].write_text("a\tb\tscore\n" + "".join(
            f"{a}\t{b}\t{s}\n" for a, b, s in zip(scored.sentences1, scored.sentences2, scored.scores, strict=True)))
        test_file = work / "test.txt"
        test_file.write_text("\n".join(unique) + "\n")
        results["minilm_before_training"] = before = minilm_before(unique, sts)
        print(f"MiniLM before training: {json.dumps(before)}", flush=True)
        if "mnrl-mined" in args.losses:
            results["mining"] = mine(args, train["mnrl"], train["triples"])
            print(f"mined: {json.dumps(results['mining'])}", flush=True)
        turn = 0
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for loss in args.losses:
                order = ["ours", "anchor"] if turn % 2 == 0 and not args.same_batches else ["anchor", "ours"]
                turn += 1
                batches = work / f"batches-{loss}-{seed}.json" if args.same_batches else None
                for who in order if args.anchor_python else ["ours"]:
                    res = run_ours(args, loss, seed, work, unique, sts, batches) if who == "ours" else run_anchor(
                        args, loss, seed, work, train, test_file, unique, sts, batches)
                    rows = args.batch_size * float(res["steps"])
                    res["texts_per_sec"] = TEXTS_PER_ROW[LOSSES[loss][2]] * rows / float(res["train_seconds"])
                    runs.append({"who": who, "loss": loss, "seed": seed, **res})
                    print(f"{loss} {who} seed {seed}: {json.dumps(res)}", flush=True)
                    if args.out:  # what is measured so far, should the run be cut short
                        write_json(args.out, {**results, "runs": runs, "partial": True})
    results["runs"] = runs
    results["load_average_after"] = os.getloadavg()
    results["summary"] = summary = summarise(runs)
    print(f"\nload average before {results['load_average']}, after {results['load_average_after']}; "
          f"MiniLM before training: {100 * before['spearman']:.2f}")
    print(f"\n| loss | who | SICK-R Spearman (mean ± sd, {args.seeds} seeds) | texts/s | steps |\n|---|---|---|---|---|")
    for row in summary:
        print(f"| {row['loss']} | {row['who']} | {row['spearman']} | {row['texts_per_sec']} | {row['steps']} |")
    if args.out:
        write_json(args.out, results)


def write_json(out: str, results: dict[str, object]) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2))


def mean_sd(values: list[float], scale: float, digits: int) -> str:
    """``mean ± sd`` (sample sd; the mean alone for one value)."""
    mean = statistics.fmean(values) * scale
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def summarise(runs: list[dict[str, object]]) -> list[dict[str, object]]:
    """One row per (loss, who), in the order they first ran: Spearman x 100 and texts/s as mean ± sd."""
    groups: dict[tuple[str, str], list[dict[str, object]]] = {}
    for r in runs:
        groups.setdefault((str(r["loss"]), str(r["who"])), []).append(r)
    rows: list[dict[str, object]] = []
    for (loss, who), group in sorted(groups.items(), key=lambda kv: (list(LOSSES).index(kv[0][0]), kv[0][1] != "ours")):
        rho = [float(r["spearman"]) for r in group]  # type: ignore[arg-type]
        speed = [float(r["texts_per_sec"]) for r in group]  # type: ignore[arg-type]
        rows.append({
            "loss": loss, "who": who, "seeds": len(group), "spearman": mean_sd(rho, 100, 2),
            "texts_per_sec": mean_sd(speed, 1, 1), "spearman_values": rho, "texts_per_sec_values": speed,
            "steps": "/".join(str(n) for n in sorted({int(r["steps"]) for r in group})),  # type: ignore[call-overload]
        })
    return rows


def minilm_before(unique: list[str], sts: STSData) -> dict[str, float]:
    """SICK-R of all-MiniLM-L6-v2 before training (mean pooling, max length 64), by the same evaluator."""
    enc = load_pretrained_text_encoder(minilm_path(), max_length=64)
    return sts_of(enc.encode(unique, batch_size=128, device=torch.device("cpu")).numpy(), unique, sts)


def mine(args: argparse.Namespace, pairs_file: Path, out: Path) -> dict[str, object]:
    """One hard negative per entailment pair, from the SICK TRAIN sentences, found with MiniLM
    through our miner (what ``contrastkit mine minilm --pairs ... --corpus sick:train`` runs)."""
    t0 = time.perf_counter()
    stats = mine_with_encoder("minilm", "sick:train", out, pairs=f"{pairs_file}#a,b", max_length=64,
                              data_root=args.data_root, **MINING)  # type: ignore[arg-type]
    return {**stats, "seconds": time.perf_counter() - t0}

if __name__ == "__main__":
    main()
