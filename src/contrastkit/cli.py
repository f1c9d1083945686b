"""Command line: contrastkit train | evaluate | embed | recipes.

User mistakes print one line `contrastkit: error: ...` and exit with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, TextIO

from contrastkit import __version__
from contrastkit.errors import UserError

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

    p = sub.add_parser("evaluate", help="(re-)evaluate a finished or interrupted run")
    p.add_argument("run_dir")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override eval.* values, e.g. --set eval.finetune=true")

    p = sub.add_parser("embed", help="write features of a data set computed by a run's encoder")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="NAME[:SPLIT] (e.g. fashion-mnist:test) or an image folder")
    p.add_argument("--out", required=True, help="output .npy file (labels go to <stem>.labels.npy)")
    p.add_argument("--batch-size", type=int, default=512)

    sub.add_parser("recipes", help="list the shipped recipes")
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    from contrastkit.config import apply_overrides, load_config
    from contrastkit.pipeline import new_run_dir, read_run_config, run_all

    if args.resume and args.out and (Path(args.out) / "config.yaml").is_file():
        if args.recipe:
            raise UserError("--resume continues the run's own recipe; drop the recipe argument")
        # overrides on resume: e.g. more epochs, other evaluation settings
        cfg = apply_overrides(read_run_config(Path(args.out)), args.overrides)
    else:
        cfg = load_config(args.recipe, args.overrides)
    if args.no_eval:
        cfg.eval.enabled = False
    run_dir = new_run_dir(cfg, args.out, args.resume)
    results = run_all(cfg, run_dir, resume=args.resume, progress=not args.quiet)
    _print_summary(results, run_dir)
    return 0


def _print_summary(results: dict[str, Any], run_dir: Path) -> None:
    from contrastkit.evaluate.suite import results_table

    tr = results.get("train", {})
    print()
    print(
        f"trained {tr.get('steps')} steps ({tr.get('epochs_done', 0):.1f} epochs) in "
        f"{tr.get('seconds', 0):.0f}s, {tr.get('images_per_sec', 0):.0f} images/s, final loss "
        f"{tr.get('final_loss', float('nan')):.4f}"
    )
    if "eval" in results:
        print()
        print("accuracy (%) on the test split:")
        print(results_table(results["eval"]))
    print()
    print(f"results: {run_dir / 'results.json'}")
    plots = results.get("eval", {}).get("plots")
    if plots:
        print(f"plots:   {run_dir / 'plots'}")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from contrastkit.config import apply_overrides
    from contrastkit.evaluate.suite import results_table
    from contrastkit.pipeline import evaluate, read_run_config, write_results

    run_dir = Path(args.run_dir)
    cfg = apply_overrides(read_run_config(run_dir), args.overrides)
    import json

    path = run_dir / "results.json"
    results: dict[str, Any] = (
        json.loads(path.read_text()) if path.is_file() else {"run_dir": str(run_dir)}
    )
    results["eval"] = evaluate(run_dir, cfg)
    write_results(run_dir, results)
    print()
    print("accuracy (%) on the test split:")
    print(results_table(results["eval"]))
    print(f"\nresults: {path}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from contrastkit.pipeline import embed

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    n, d = embed(Path(args.run_dir), args.data, Path(args.out), batch_size=args.batch_size)
    print(f"wrote {n} × {d} features to {args.out}")
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    from contrastkit.config import recipe_names

    for name in recipe_names():
        print(name)
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
    handlers = {"train": _cmd_train, "evaluate": _cmd_evaluate, "embed": _cmd_embed, "recipes": _cmd_recipes}
    warnings.showwarning = _one_line_warning
    try:
        return handlers[args.command](args)
    except UserError as exc:
        print(f"contrastkit: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("\ncontrastkit: interrupted; the last checkpoint is kept (continue with --resume)", file=sys.stderr)
        return 130
    except Exception as exc:
        from contrastkit.train import TrainingDiverged

        if isinstance(exc, TrainingDiverged):
            print(f"contrastkit: training stopped: {exc}", file=sys.stderr)
            return EXIT_DIVERGED
        raise


if __name__ == "__main__":
    sys.exit(main())
