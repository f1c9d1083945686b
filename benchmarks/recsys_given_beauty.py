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
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from recsys_ml100k import run_recbole, table  # noqa: E402  (the same RecBole anchor and table)

RECBOLE = {"lightgcn": "LightGCN"}  # SimGCL / XSimGCL are not in RecBole 1.2.1 (RecBole-GNN only)


def run_ours(model: str, args: argparse.Namespace, out: Path) -> tuple[dict[str, Any], Any]:
    from contrastkit.config import load_config
    from contrastkit.runs import new_run_dir
    from contrastkit.tasks.runner import run_all

    cfg = load_config("amazon-beauty-lightgcn", [
        f"recsys.root={args.root}", f"method.name={model}", f"train.epochs={args.epochs}",
        f"recsys.eval_every={args.eval_every}", f"recsys.patience={args.patience}",
        f"train.num_threads={args.threads}", "train.progress=false", *args.overrides,
    ])
    run_dir = new_run_dir(cfg, str(out / f"contrastkit-{model}"), resume=False)
    t0 = time.perf_counter()
    res = run_all(cfg, run_dir, progress=False, verbose=False)
    wall = time.perf_counter() - t0
    test = res["eval"]["test"]
    es = res["early_stopping"]
    # "s to best" to the end of the best epoch's validation, as RecBole's is measured
    valid_log = list(csv.DictReader((run_dir / "validation_log.csv").open()))
    best_valid = next((float(r["seconds"]) for r in valid_log if int(r["epoch"]) == es["best_epoch"]), 0.0)
    epochs = res["train"]["epochs_done"]
    row = {
        "library": "contrastkit", "model": model,
        "valid_ndcg@20": es["best"], "recall@20": test[model]["recall@20"], "ndcg@20": test[model]["ndcg@20"],
        "seconds_per_epoch": es["seconds_per_epoch"], "epochs": epochs,
        "best_epoch": es["best_epoch"], "seconds_to_best": es["seconds_to_best"] + best_valid,
        "validation_seconds": es["validation_seconds"], "seconds_total": wall,
        "method": {k: v for k, v in vars(cfg.method).items() if isinstance(v, (int, float, str))},
        "data": res["eval"].get("data"), "popularity": test.get("popularity"), "run_dir": str(run_dir),
    }
    return row, cfg


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


def recbole_params(cfg: Any, args: argparse.Namespace) -> dict[str, Any]:
    m = cfg.method
    return {
        "embedding_size": m.embedding_dim, "n_layers": m.layers, "learning_rate": cfg.optim.lr,
        "train_batch_size": cfg.train.batch_size, "eval_batch_size": 4096, "epochs": args.epochs,
        "eval_step": args.eval_every, "stopping_step": args.patience, "reg_weight": m.reg,
        "require_pow": True, "seed": cfg.train.seed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(HERE.parents[1] / "shared" / "data" / "amazon-beauty"))
    parser.add_argument("--out", default="runs/bench-beauty")
    parser.add_argument("--recbole-python", default=None, help="Python of an environment with RecBole 1.2.1")
    parser.add_argument("--models", default="lightgcn,simgcl,xsimgcl")
    parser.add_argument("--epochs", type=int, default=100, help="the same cap for both libraries")
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--patience", type=int, default=1000, help="validations without gain before stopping")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (both libraries)")
    parser.add_argument("--no-ours", action="store_true",
                        help="RecBole only (its settings still come from our recipe); to run it next to ours")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override for our recipe")
    args = parser.parse_args()
    args.root = str(Path(args.root).resolve())
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"epochs": args.epochs, "eval_every": args.eval_every, "patience": args.patience,
                            "threads": args.threads, "torch": torch.__version__, "python": sys.version.split()[0]}
    exported: dict[str, int] | None = None

    def save() -> None:
        (out / "recsys_given_beauty.json").write_text(json.dumps({"info": info, "rows": rows}, indent=2))

    for model in args.models.split(","):
        if args.no_ours:
            from contrastkit.config import load_config

            cfg = load_config("amazon-beauty-lightgcn", [f"method.name={model}", *args.overrides])
        else:
            row, cfg = run_ours(model, args, out)
            rows.append(row)
            print(table(rows[-1:]).splitlines()[-1], flush=True)
            save()
        anchor = RECBOLE.get(model)
        if anchor and args.recbole_python:
            if exported is None:
                exported = export_recbole(Path(args.root), out / "recbole_data" / "beauty", "beauty")
                info["recbole_files"] = exported
            rows.append(run_recbole(args.recbole_python, out / "recbole_data", "beauty", anchor,
                                    recbole_params(cfg, args), out, args.threads, ("Recall", "NDCG")))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
            save()
    print()
    print(table(rows))
    print(f"\nepochs capped at {args.epochs} for both, validation every {args.eval_every}; "
          f"torch {torch.__version__}, threads {args.threads}; wrote {out / 'recsys_given_beauty.json'}")


if __name__ == "__main__":
    main()
