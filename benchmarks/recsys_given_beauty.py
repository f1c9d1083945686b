"""Amazon Beauty (SELFRec's given train / valid / test split): contrastkit's LightGCN, SimGCL and
XSimGCL against RecBole 1.2.1's LightGCN on the same three files (issue 13, benchmark 4).

contrastkit trains the shipped ``amazon-beauty-lightgcn`` recipe (``recsys.split: given``), with
``method.name`` switched for SimGCL / XSimGCL (their other settings: the method defaults). RecBole
receives the same files as benchmark files ``beauty.{train,valid,test}.inter``, with the validation
and test interactions of users or items absent from training removed (contrastkit drops those
itself, since an embedding model cannot score them, and reports the counts): both libraries then
rank every training item for the same users against the same held-out interactions, training
items masked on validation, training + validation items on test. Same embedding size, layers,
batch, learning rate, L2 term, epochs, validation interval and torch threads.

The full recipe (100 epochs, patience 5 validations) is slow on a 2-core CPU for both libraries:
``--epochs`` caps the training identically for both (early stopping effectively off with
``--patience``), and the table says so. s/epoch is training only (validations excluded); "s to
best" runs to the end of the best epoch's validation, for both libraries.

    python benchmarks/recsys_given_beauty.py --root ../shared/data/amazon-beauty --out runs/bench-beauty \
        --recbole-python /work/benchvenv-recbole/bin/python --epochs 20 --eval-every 5
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import common

RECIPE = "amazon-beauty-lightgcn"
RECBOLE = {"lightgcn": "LightGCN"}  # SimGCL / XSimGCL are not in RecBole 1.2.1 (RecBole-GNN only)


def overrides(model: str, args: argparse.Namespace) -> list[str]:
    """The recipe with ``method.name`` switched and the benchmark's epochs, validation interval and threads."""
    return [
        f"recsys.root={args.root}", f"method.name={model}", f"train.epochs={args.epochs}",
        f"recsys.eval_every={args.eval_every}", f"recsys.patience={args.patience}",
        f"train.num_threads={args.threads}", *args.overrides,
    ]


def run_ours(model: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    res, run_dir, wall = common.run_recipe(RECIPE, overrides(model, args), out / f"contrastkit-{model}")
    row = common.ranking_row(model, res, run_dir, wall)
    # "s to best" to the end of the best epoch's validation, as RecBole's is measured
    valid_log = list(csv.DictReader((run_dir / "validation_log.csv").open()))
    row["seconds_to_best"] += next((float(r["seconds"]) for r in valid_log if int(r["epoch"]) == row["best_epoch"]), 0.0)
    row["method"] = res["config"]["method"]
    row["data"] = res["eval"].get("data")
    return row


def _pairs(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            rows.append((parts[0], parts[1]))
    return rows


def export_recbole(root: Path, folder: Path, name: str) -> dict[str, int]:
    """The given files as RecBole benchmark files, held-out interactions of unseen ids removed."""
    folder.mkdir(parents=True, exist_ok=True)
    train = _pairs(root / "train.txt")
    users, items = {u for u, _ in train}, {i for _, i in train}
    stats = {"train": len(train)}
    for part, rows in (("train", train), ("valid", _pairs(root / "valid.txt")), ("test", _pairs(root / "test.txt"))):
        kept = [(u, i) for u, i in rows if u in users and i in items]
        stats[f"{part}_kept"], stats[f"{part}_dropped"] = len(kept), len(rows) - len(kept)
        lines = ["user_id:token\titem_id:token", *(f"{u}\t{i}" for u, i in kept)]
        (folder / f"{name}.{part}.inter").write_text("\n".join(lines) + "\n")
    return stats


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--root", default=str(common.SHARED_DATA / "amazon-beauty"))
    ap.add_argument("--out", default="runs/bench-beauty")
    ap.add_argument("--recbole-python", default=None, help="Python of an environment with RecBole 1.2.1")
    ap.add_argument("--models", default="lightgcn,simgcl,xsimgcl")
    ap.add_argument("--epochs", type=int, default=100, help="the same cap for both libraries")
    ap.add_argument("--patience", type=int, default=1000, help="validations without gain before stopping")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (both libraries)")
    ap.add_argument("--eval-every", type=int, default=5, help="epochs between validations")
    ap.add_argument("--no-ours", action="store_true",
                    help="RecBole only (its settings still come from our recipe); to run it next to ours")
    common.add_overrides(ap, "our recipe", dest="overrides")
    args = ap.parse_args()
    args.root = str(Path(args.root).resolve())
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    import torch

    from contrastkit.recipes import load_config

    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"epochs": args.epochs, "eval_every": args.eval_every, "patience": args.patience,
                            "threads": args.threads, "torch": torch.__version__, "python": sys.version.split()[0]}
    exported: dict[str, int] | None = None

    def save() -> None:
        (out / "recsys_given_beauty.json").write_text(json.dumps({"info": info, "rows": rows}, indent=2))

    for model in args.models.split(","):
        if not args.no_ours:
            rows.append(run_ours(model, args, out))
            print(common.ranking_table(rows[-1:]).splitlines()[-1], flush=True)
            save()
        anchor = RECBOLE.get(model)
        if anchor and args.recbole_python:
            if exported is None:
                exported = export_recbole(Path(args.root), out / "recbole_data" / "beauty", "beauty")
                info["recbole_files"] = exported
            cfg = load_config(RECIPE, overrides(model, args))
            params = common.recbole_params(cfg, n_layers=cfg.method.layers)
            rows.append(common.run_recbole(args.recbole_python, out / "recbole_data", "beauty", anchor, params,
                                           out, args.threads, ("Recall", "NDCG")))
            print(common.ranking_table(rows[-1:]).splitlines()[-1], flush=True)
            save()
    print()
    print(common.ranking_table(rows))
    print(f"\nepochs capped at {args.epochs} for both, validation every {args.eval_every}; "
          f"{common.versions()}, threads {args.threads}; wrote {out / 'recsys_given_beauty.json'}")


if __name__ == "__main__":
    main()
