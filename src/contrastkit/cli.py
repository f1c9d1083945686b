"""Command line: contrastkit train | evaluate | report | embed | export | compare | sweep | index | search |
mine | recommend | similar | serve | prepare | recipes | methods | doctor.

User mistakes print one line `contrastkit: error: ...` and exit with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any, TextIO

from contrastkit.errors import UserError
from contrastkit.version import __version__

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contrastkit",
        description="Contrastive self-supervised representation learning.",
    )
    parser.add_argument("--version", action="version", version=f"contrastkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a recipe, then evaluate it (default: SimCLR on digits)")
    p.add_argument("recipe", nargs="?", default=None, help="shipped recipe name or path to a YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<name>-<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-eval", action="store_true", help="train only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train in N processes on this machine (torchrun + DDP; one per GPU on GPUs)")

    p = sub.add_parser("evaluate", help="(re-)evaluate a finished or interrupted run")
    p.add_argument("run_dir")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override eval.* values, e.g. --set eval.finetune=true")

    p = sub.add_parser("embed", help="write features of a data set computed by a run's encoder")
    p.add_argument("run_dir")
    p.add_argument("--data", default=None,
                   help="NAME[:SPLIT] (e.g. fashion-mnist:test) or an image folder; recsys runs: "
                        "users, items or all (default: all, into one .npz)")
    p.add_argument("--out", required=True,
                   help="output file: .npy for image and text runs (labels / texts beside it, <stem>.labels.npy / "
                        "<stem>.texts.txt); .npz for recsys and item2vec runs (users and items; --data users or "
                        "items: .npy with <stem>.ids.txt) and word2vec runs (vectors, tokens)")
    p.add_argument("--batch-size", type=int, default=512)

    p = sub.add_parser("export", help="a run's encoder (torchvision, timm, onnx, huggingface), embeddings (arrays), word or "
        "item vectors (word2vec) or agent (sb3) for other tools")
    p.add_argument("run_dir")
    p.add_argument("--format", required=True, metavar="FORMAT",
                   help="torchvision, timm, onnx, huggingface (alias sentence-transformers; with a model card), arrays, "
                        "word2vec (gensim's text format: word2vec, item2vec and recsys runs) or sb3 (Stable-Baselines3 "
                        "DQN.load; a pixel agent's needs contrastkit installed to load)")
    p.add_argument("--out", required=True,
                   help="file (.safetensors/.pt, .onnx, .npz/.parquet, word2vec .txt/.vec, sb3 .zip) or, for huggingface, "
                        "a new folder")
    p.add_argument("--data", default=None, help="arrays: the data set, as for contrastkit embed (default: the task's)")

    p = sub.add_parser("compare", help="train several recipes on the same data for the same time budget")
    p.add_argument("recipes", nargs="+", help="shipped recipe names or YAML paths")
    p.add_argument("--budget-minutes", type=float, required=True, help="training time per recipe")
    p.add_argument("--out", default=None, help="output folder (default: runs/compare-<timestamp>)")
    p.add_argument("--shots", type=int, default=10, help="labels per class of the few-label probe (default 10)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override applied to every recipe, e.g. --set data.name=fashion-mnist")
    p.add_argument("--progress", action="store_true", help="show each run's progress bar")

    p = sub.add_parser("sweep", help="search hyper-parameters of a recipe on the task's validation data (Optuna), then "
                       "train and test the best once against the default")
    p.add_argument("recipe", nargs="?", default=None, help="shipped recipe name or YAML path (not with --resume / --worker)")
    p.add_argument("--space", action="append", default=[], metavar="KEY=SPEC",
                   help="an option and its values: low:high, low:high:log, int:low:high or a,b,c (repeatable)")
    p.add_argument("--trials", type=int, default=None, help="trials to run (complete, pruned and failed ones count)")
    p.add_argument("--out", required=True, help="sweep folder: trials/, study.db, sweep.json, best.yaml, sweep.html")
    p.add_argument("--budget-minutes", type=float, default=None, help="training time per trial (and per final run)")
    p.add_argument("--sampler", default="tpe", help="tpe (default), random or grid (grid: int and listed values only)")
    p.add_argument("--pruner", default="median", help="median (default), hyperband or none")
    p.add_argument("--metric", default=None, help="the task's validation metric (checked; default: the task's)")
    p.add_argument("--validate-every", type=int, default=None, metavar="N",
                   help="measure the validation every N units of the task's own option for it (steps for images "
                        "and text, epochs for recsys: recsys.eval_every); the values the pruner reads")
    p.add_argument("--jobs", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--storage", default=None, help="database URL of the study (default: sqlite in --out), e.g. "
                   "postgresql://user:pass@host/db for workers on several machines")
    p.add_argument("--study", default=None, help="study name in the storage (default: the --out folder's name)")
    p.add_argument("--resume", action="store_true", help="continue the sweep in --out (a killed one, or more --trials)")
    p.add_argument("--worker", action="store_true", help="only run trials of the sweep in --out (as --jobs does)")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    p.add_argument("--no-final", action="store_true", help="skip training and testing the best and default at the end")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override of the recipe for every trial and final run (repeatable)")

    p = sub.add_parser("recommend", help="top-K items for a user of a recommendation run (recsys or item2vec; "
                       "seen items excluded)")
    p.add_argument("run_dir")
    p.add_argument("--user", required=True, help="the user's id as in the training data")
    p.add_argument("--k", type=int, default=10)
    p = sub.add_parser("similar", help="the K items (recsys, item2vec runs) or words (word2vec runs) closest to one "
                       "of the run's own, by cosine")
    p.add_argument("run_dir")
    p.add_argument("--item", "--word", dest="item", required=True, metavar="ID",
                   help="the item's id as in the training data, or the word (--word is the same option)")
    p.add_argument("--k", type=int, default=10)

    p = sub.add_parser("index", help="build a nearest-neighbour index (faiss) over a run's embeddings of a data set")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True,
                   help="texts (sick:SPLIT, a .txt file, FILE.csv#COLUMN) or images (NAME[:SPLIT], a folder)")
    p.add_argument("--kind", default="auto", help="auto (by size), flat (exact), hnsw or ivf")
    p.add_argument("--name", default=None, help="index name (default: from --data)")
    p.add_argument("--batch-size", type=int, default=256)

    p = sub.add_parser("search", help="top-K items of a run's index for a text or an image-file query")
    p.add_argument("run_dir")
    p.add_argument("--query", required=True, help="a text, or the path of an image file")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--index", default=None, help="which index of the run (needed when it has several)")

    p = sub.add_parser("mine", help="hard negatives for (anchor, positive) pairs from a corpus, found with a text run's "
                       "encoder: (anchor, positive, negative) rows to train simcse_supervised on")
    p.add_argument("run_dir", metavar="RUN", help="a text run folder; or a text encoder (minilm, a transformers folder, "
                   "a hub name), then --pairs is needed")
    p.add_argument("--corpus", default=None, help="texts to mine from: a .txt, FILE.csv#COLUMN, FILE.parquet#COLUMN or "
                   "sick:SPLIT (default: the pairs' positives)")
    p.add_argument("--pairs", default=None, help="FILE#ANCHOR,POSITIVE or sick:SPLIT (default: the run's training pairs)")
    p.add_argument("--out", required=True, help="triples file: .tsv, .csv or .jsonl with columns anchor, positive, negative")
    p.add_argument("--negatives", type=int, default=1, help="negatives (rows) per pair (default 1)")
    p.add_argument("--margin", type=float, default=None, help="skip candidates more similar to the anchor than the "
                   "positive is, less MARGIN (likely positives)")
    p.add_argument("--range-min", type=int, default=0, help="skip the RANGE_MIN candidates nearest to the anchor")
    p.add_argument("--range-max", type=int, default=None, help="consider candidates up to this rank only")
    p.add_argument("--k", type=int, default=None, help="candidates searched per anchor (default: --range-max, else "
                   "--range-min + 10 x --negatives)")
    p.add_argument("--sampling", default="top", help="of the candidates left: the nearest (top, default) or a random "
                   "draw (random, seeded by --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of --sampling random (default 0)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-length", type=int, default=128, help="tokens per text of an encoder given as RUN (a run "
                   "uses its own)")

    p = sub.add_parser("serve", help="a local web page to explore a run: search, neighbours, recommendations")
    p.add_argument("run_dir")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")

    p = sub.add_parser("report", help="one self-contained HTML page about one run, or several side by side")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folder(s)")
    p.add_argument("--out", default=None, help="HTML file to write (default for one run: RUN_DIR/report.html)")

    p = sub.add_parser("prepare", help="decode images once into a memory-mapped store (train with data.name=store)")
    p.add_argument("source", help="an image folder (flat, class subfolders, train/ test/ splits), tar shards "
                   "(a .tar, a folder of them, 'dir/train-{000..009}.tar') or NAME[:SPLIT]")
    p.add_argument("--out", required=True, help="store folder to write (an interrupted prepare continues)")
    p.add_argument("--size", type=int, default=None,
                   help="image side: shorter side resized to it, then centre crop (default: folders 64, data sets their own)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: CPU count; 0: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("recipes", help="the shipped recipes: task, method, data, extra needed; "
                       "'recipes show NAME' prints one to copy")
    shows = p.add_subparsers(dest="recipes_command", metavar="show")
    p = shows.add_parser("show", help="print a shipped recipe's YAML (to copy and edit)")
    p.add_argument("name", help="recipe name, as listed by contrastkit recipes")

    sub.add_parser("doctor", help="versions, device, extras, data sets and models found: paste it into a bug report")

    p = sub.add_parser("methods", help="every method with its task, paper and options (defaults, help)")
    p.add_argument("name", nargs="?", default=None, help="show one method only")
    p.add_argument("--task", default=None, help="only the methods of this task")
    return parser


def _launch_nproc(args: argparse.Namespace) -> int:
    """`contrastkit train ... --nproc N`: the same command in N processes (torchrun + DDP)."""
    from contrastkit.runs import run_dir_for
    from contrastkit.training.launch import launch

    # one-line errors before any process starts
    args.out = str(run_dir_for(Path(args.recipe or "digits-simclr").stem, args.out, args.resume))
    if not args.resume:
        from contrastkit.recipes import load_config

        cfg = load_config(args.recipe, args.overrides)
        if cfg.train.batch_size % args.nproc:
            raise UserError(
                f"train.batch_size {cfg.train.batch_size} (the global batch) is not divisible by "
                f"--nproc {args.nproc}"
            )
    argv = ["train", *([args.recipe] if args.recipe else []), "--out", args.out]
    for o in args.overrides:
        argv += ["--set", o]
    argv += [flag for flag, on in (("--resume", args.resume), ("--no-eval", args.no_eval), ("--quiet", args.quiet)) if on]
    return launch(args.nproc, argv, _resume_command(args.out, args.nproc))


def _resume_command(out: str | Path, nproc: int = 1) -> str:
    return f"contrastkit train --out {out} --resume" + (f" --nproc {nproc}" if nproc > 1 else "")


def _cmd_train(args: argparse.Namespace) -> int:
    from contrastkit.api import train
    from contrastkit.training.distributed import env_world_size

    if args.nproc is not None:
        if args.nproc < 1:
            raise UserError(f"--nproc must be >= 1, got {args.nproc}")
        if args.nproc > 1 and env_world_size() == 1:
            return _launch_nproc(args)
    if args.resume and args.recipe:
        raise UserError("--resume continues the run's own recipe; drop the recipe argument")
    run = train(args.recipe, overrides=args.overrides, out=args.out, resume=args.resume, evaluate=not args.no_eval,
                progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0":  # under torchrun rank 0 speaks for the job
        _print_results(run.trained, run.results)
    return 0


def _print_results(run: Any, results: dict[str, Any], *, headline: bool = True) -> None:
    if headline:
        print()
        print(run.headline(results))
    if "eval" in results:
        print()
        print(run.results_table(results["eval"]))
    print()
    print(f"results: {run.path / 'results.json'}")
    if (run.path / "plots").is_dir() and results.get("eval", {}).get("plots"):
        print(f"plots:   {run.path / 'plots'}")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from contrastkit.api import load_run

    run = load_run(args.run_dir, args.overrides)
    run.evaluate()
    _print_results(run.trained, run.results, headline=False)
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from contrastkit.api import load_run

    if args.batch_size < 1:  # before the run is opened: the flag's own words
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    n, d = load_run(args.run_dir).embed(args.data, args.out, batch_size=args.batch_size)
    print(f"wrote {n} × {d} features to {args.out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from contrastkit.api import load_run

    load_run(args.run_dir).export(args.format, args.out, data=args.data)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from datetime import datetime

    from contrastkit.compare import compare, compare_table

    if args.shots < 1:
        raise UserError(f"--shots must be >= 1, got {args.shots}")
    out = Path(args.out) if args.out else Path("runs") / f"compare-{datetime.now():%Y%m%d-%H%M%S}"
    rows = compare(
        args.recipes, budget_minutes=args.budget_minutes, out=out, overrides=args.overrides,
        shots=args.shots, progress=args.progress,
    )
    print()
    print(f"after {args.budget_minutes:g} min of training each (accuracies in %):" if rows and "kNN" in rows[0].get("figures", {})
          else f"after {args.budget_minutes:g} min of training each:")
    print(compare_table(rows))
    print(f"\nresults: {out / 'compare.json'}")
    return 0 if all(r.get("exit_code") == 0 for r in rows) else 1


def _cmd_sweep(args: argparse.Namespace) -> int:
    from contrastkit.sweep import sweep

    sweep(args.recipe, args.space, out=args.out, trials=args.trials, budget_minutes=args.budget_minutes,
          sampler=args.sampler, pruner=args.pruner, metric=args.metric, validate_every=args.validate_every,
          jobs=args.jobs, storage=args.storage, study=args.study, resume=args.resume, worker=args.worker,
          seed=args.seed, overrides=args.overrides, final=not args.no_final)
    return 0


def _neighbours(args: argparse.Namespace, command: str, key: str, title: str) -> int:
    """`recommend` / `similar`: the run answers with rows of item, title and score."""
    from contrastkit.api import load_run

    if args.k < 1:
        raise UserError(f"--k must be >= 1, got {args.k}")
    run = load_run(args.run_dir)
    rows = run.recommend(args.user, args.k) if command == "recommend" else run.similar(args.item, args.k)
    noun = run.trained.noun  # "item", or "word" for a word run
    print(title.format(n=len(rows), id=getattr(args, key), noun=noun, nouns=f"{noun}s"))
    for rank, row in enumerate(rows, 1):
        print(f"{rank:3d}. {row['item']:>8}  {row['score']:8.4f}  {row['title']}".rstrip())
    return 0


def _cmd_recommend(args: argparse.Namespace) -> int:
    return _neighbours(args, "recommend", "user", "top {n} for user {id} (seen items excluded):")


def _cmd_similar(args: argparse.Namespace) -> int:
    return _neighbours(args, "similar", "item", "{n} {nouns} most similar to {noun} {id} (cosine):")


def _cmd_index(args: argparse.Namespace) -> int:
    from contrastkit.api import load_run
    from contrastkit.errors import check_choice
    from contrastkit.index.faiss_index import INDEX_KINDS, IndexMeta

    check_choice("--kind", args.kind, INDEX_KINDS)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    folder = load_run(args.run_dir).index(args.data, kind=args.kind, name=args.name, batch_size=args.batch_size)
    meta = IndexMeta.read(folder)
    print(f"indexed {meta.count} {meta.modality} embeddings ({meta.dim}-d, {meta.kind}, {meta.metric}) in {folder}")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    import json

    from contrastkit.index.search import search_run
    from contrastkit.runner import load_run

    if args.k < 1:
        raise UserError(f"--k must be >= 1, got {args.k}")
    meta, modality, hits = search_run(load_run(args.run_dir), args.query, k=args.k, name=args.index)
    print(f"{modality} query → {meta.modality} index {meta.source!r} ({meta.count} items, {meta.kind}):")
    for hit in hits:
        item = hit.item
        shown = item.get("text") or item.get("image") if isinstance(item, dict) else item
        extra = f"  [{item['label']}]" if isinstance(item, dict) and "label" in item else ""
        print(f"{hit.rank:>3}  {hit.score:.4f}  {shown if isinstance(shown, str) else json.dumps(item)}{extra}")
    return 0


def _cmd_mine(args: argparse.Namespace) -> int:
    from contrastkit.runs import CONFIG_FILE

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    options = {"pairs": args.pairs, "negatives": args.negatives, "margin": args.margin, "range_min": args.range_min,
               "range_max": args.range_max, "k": args.k, "sampling": args.sampling, "seed": args.seed,
               "batch_size": args.batch_size}
    if (Path(args.run_dir) / CONFIG_FILE).is_file():
        from contrastkit.api import load_run

        stats = load_run(args.run_dir).mine(args.corpus, args.out, **options)
    else:
        from contrastkit.index.mining import mine_with_encoder

        stats = mine_with_encoder(args.run_dir, args.corpus, args.out, max_length=args.max_length, **options)
    print(f"mined {stats['rows']} (anchor, positive, negative) rows for {stats['pairs']} pairs from "
          f"{stats['corpus']} corpus texts ({stats['index']} index) into {stats['out']}")
    neg = stats["mean_negative_similarity"]
    print(f"left out: {stats['removed_as_known_positive']} known positives, {stats['removed_by_margin']} candidates "
          f"within the margin; {stats['pairs_short']} pairs got fewer than {stats['negatives_per_pair']}; mean cosine to "
          f"the anchor: positives {stats['mean_positive_similarity']:.3f}, negatives "
          f"{'-' if neg is None else f'{neg:.3f}'}")
    print(f"train on them: --set text.train_file={stats['out']} --set 'text.train_columns=[anchor, positive, negative]' "
          "--set text.train_filter=null")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from contrastkit.serve import serve

    return serve(Path(args.run_dir), host=args.host, port=args.port)


def _cmd_report(args: argparse.Namespace) -> int:
    from contrastkit.report import write_report

    # several runs side by side: the report's own; one run: the same as Run.report
    path = write_report([Path(d) for d in args.run_dirs], Path(args.out) if args.out else None)
    print(f"wrote {path}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from contrastkit.data.image.store import prepare_store

    manifest = prepare_store(args.source, args.out, size=args.size, workers=args.workers, progress=not args.quiet)
    total = sum(rec["count"] for rec in manifest["splits"].values())
    corrupt = sum(rec["corrupt"] for rec in manifest["splits"].values())
    splits = ", ".join(f"{name} {rec['count']}" for name, rec in manifest["splits"].items())
    c, s = manifest["channels"], manifest["size"]
    print(f"store {args.out}: {splits} images of {c}x{s}x{s}, {len(manifest['classes'])} classes")
    if corrupt:
        what = "sample(s) (image undecodable or missing)" if "shards" in manifest else "file(s)"
        print(f"skipped {corrupt} corrupt or unreadable {what}")
    for shard in manifest.get("shards", []):
        if "error" in shard:
            print(f"shard {shard['name']} is damaged ({shard['error']}): kept its {shard['images']} image(s) read before")
    rate = total / manifest["seconds"] if manifest["seconds"] > 0 else float("inf")
    print(f"{total} images in {manifest['seconds']:.1f} s ({rate:.0f} images/s); "
          f"train with --set data.name=store --set data.root={args.out}")
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    from contrastkit.recipes import recipe_rows, recipe_text

    if args.recipes_command == "show":
        print(recipe_text(args.name), end="")
        return 0
    rows = [{**row, "extra": row["extra"] or "-"} for row in recipe_rows()]
    columns = ["name", "task", "method", "data", "extra"]
    width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    for row in [dict(zip(columns, columns, strict=True)), *rows]:
        print("  ".join(row[c].ljust(width[c]) for c in columns).rstrip())
    print("\nextra: an optional extra to install first (contrastkit doctor prints the pip command)")
    print("contrastkit recipes show NAME prints a recipe's YAML to copy; contrastkit train NAME trains it")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from contrastkit.doctor import report

    print(report())
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from contrastkit.errors import check_choice
    from contrastkit.methods.registry import all_methods
    from contrastkit.options import describe
    from contrastkit.tasks import task_names

    specs = all_methods()
    if args.task is not None:
        check_choice("--task", args.task, task_names())
        specs = [m for m in specs if args.task in m.tasks]
    if args.name is not None:
        check_choice("method", args.name, [m.name for m in specs])
        specs = [m for m in specs if m.name == args.name]
    for i, spec in enumerate(sorted(specs, key=lambda m: (m.tasks, m.name))):
        if i:
            print()
        print(f"{spec.name}  (task {' / '.join(spec.tasks)}; {spec.paper})")
        print(f"  {spec.summary}")
        rows = [r for r in describe(spec.options) if r[0] != "name"]
        width = max((len(f"{n} = {d}") for n, _, d, _ in rows), default=0)
        for name, _tp, default, help_text in rows:
            print(f"    method.{f'{name} = {default}'.ljust(width)}  {help_text}")
    return 0


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Warnings reach the user as one line, without source locations."""
    print(f"contrastkit: warning: {message}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `contrastkit` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    handlers = {
        "train": _cmd_train,
        "evaluate": _cmd_evaluate,
        "report": _cmd_report,
        "embed": _cmd_embed,
        "export": _cmd_export,
        "compare": _cmd_compare,
        "sweep": _cmd_sweep,
        "recommend": _cmd_recommend,
        "similar": _cmd_similar,
        "index": _cmd_index,
        "search": _cmd_search,
        "mine": _cmd_mine,
        "prepare": _cmd_prepare,
        "recipes": _cmd_recipes,
        "methods": _cmd_methods,
        "doctor": _cmd_doctor,
        "serve": _cmd_serve,
    }
    warnings.showwarning = _one_line_warning
    try:
        return handlers[args.command](args)
    except Exception as exc:
        return _report(exc)
    except KeyboardInterrupt:
        _say("\ncontrastkit: interrupted; the last checkpoint is kept (continue with --resume)")
        return 130


def _say(line: str) -> None:
    """An error line, from the first process of a torchrun job only (the others agree)."""
    if os.environ.get("RANK", "0") == "0":
        print(line, file=sys.stderr)


def _report(exc: Exception) -> int:
    """One line and the exit code for what stopped a command; anything else is a bug (re-raised)."""
    from contrastkit.training import CheckpointWriteError, TrainingDiverged
    from contrastkit.training.preemption import (
        EXIT_CHECKPOINT_WRITE,
        EXIT_DIST_FAILURE,
        EXIT_PREEMPTED,
        DistributedFailure,
        Preempted,
    )

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if isinstance(exc, UserError):
        _say(f"contrastkit: error: {exc}")
        return EXIT_USER_ERROR
    if isinstance(exc, Preempted):
        run_dir = Path(exc.checkpoint).parent.parent
        _say(
            f"contrastkit: stopped by {exc.signal_name} after step {exc.step} of {exc.total_steps}; "
            f"checkpoint written; continue with: {_resume_command(run_dir, world)}"
        )
        return EXIT_PREEMPTED
    if isinstance(exc, DistributedFailure):
        if not os.environ.get("CONTRASTKIT_LAUNCHED"):  # under --nproc the launcher reports it
            _say(f"contrastkit: {exc}; resume with --resume")
        return EXIT_DIST_FAILURE
    if isinstance(exc, CheckpointWriteError):
        _say(f"contrastkit: error: {exc.strerror or exc}")
        return EXIT_CHECKPOINT_WRITE
    if isinstance(exc, TrainingDiverged):
        _say(f"contrastkit: training stopped: {exc}")
        return EXIT_DIVERGED
    raise exc


if __name__ == "__main__":
    sys.exit(main())
