"""MovieLens 100K: contrastkit's MF, LightGCN, SGL, SimGCL and XSimGCL against RecBole's BPR,
LightGCN and SGL on the same split, with the same full-ranking protocol, interleaved.

Every model trains from its shipped recipe (ml100k-<model>): ratings >= 4 as positives, random
80/10/10 split per user, early stopping on validation NDCG@20, best checkpoint evaluated on
test with train and validation items masked. RecBole (optional, `--recbole-python`: a Python
with RecBole 1.2.1, NumPy < 2 and SciPy < 1.12) receives the very same split as RecBole
benchmark files and the same hyper-parameters.

    python benchmarks/recsys_ml100k.py --root ../shared/data/ml-100k --out runs/bench-recsys \
        --recbole-python /path/to/recbole-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import common
import torch

from contrastkit.config import Config
from contrastkit.data.interactions.spec import saved_split
from contrastkit.recipes import read_run_config

# (ours, RecBole model or None), in the order they run: each anchor right after its counterpart
PLAN = [("lightgcn", "LightGCN"), ("sgl", "SGL"), ("mf", "BPR"), ("simgcl", None), ("xsimgcl", None)]


def export_split(run_dir: Path, folder: Path, name: str) -> None:
    """Our split as RecBole benchmark files <name>.{train,valid,test}.inter (the user's own ids)."""
    data = saved_split(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for part in ("train", "valid", "test"):
        pairs = getattr(data, part)
        lines = ["user_id:token\titem_id:token"]
        lines += [f"{data.user_ids[u]}\t{data.item_ids[i]}" for u, i in pairs.tolist()]
        (folder / f"{name}.{part}.inter").write_text("\n".join(lines) + "\n")


def anchor_params(cfg: Config, model: str) -> dict[str, Any]:
    """RecBole's settings for ``model`` from our recipe's (layers and SGL's augmentation too)."""
    m = cfg.method
    extra: dict[str, Any] = {"n_layers": m.layers} if model in ("LightGCN", "SGL") else {}
    if model == "SGL":
        extra.update(type=m.augmentation.upper(), drop_ratio=m.drop_ratio, ssl_tau=m.temperature, ssl_weight=m.cl_weight)
    return common.recbole_params(cfg, **extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(common.SHARED_DATA / "ml-100k"))
    parser.add_argument("--out", default="runs/bench-recsys")
    parser.add_argument("--recbole-python", default=None, help="Python of an environment with RecBole 1.2.1")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every model (both libraries)")
    parser.add_argument("--models", default=",".join(m for m, _ in PLAN))
    common.add_overrides(parser, "our recipes", dest="overrides")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    wanted = args.models.split(",")
    rows: list[dict[str, Any]] = []
    exported = False
    name = "ml100k_ck"
    popularity = None
    for ours, anchor in PLAN:
        if ours not in wanted:
            continue
        overrides = [f"recsys.root={args.root}", f"train.num_threads={args.threads}", *args.overrides]
        res, run_dir, wall = common.run_recipe(f"ml100k-{ours}", overrides, out / f"contrastkit-{ours}")
        row = common.ranking_row(ours, res, run_dir, wall)
        popularity = row.pop("popularity")
        rows.append(row)
        print(common.ranking_table(rows[-1:]).splitlines()[-1], flush=True)
        if anchor and args.recbole_python:
            if not exported:
                export_split(run_dir, out / "recbole_data" / name, name)
                exported = True
            params = anchor_params(read_run_config(run_dir), anchor)
            rows.append(common.run_recbole(args.recbole_python, (out / "recbole_data").resolve(), name, anchor,
                                           params, out.resolve(), args.threads))
            print(common.ranking_table(rows[-1:]).splitlines()[-1], flush=True)
    if popularity is not None:
        rows.append({"library": "contrastkit", "model": "popularity", "valid_ndcg@20": None,
                     "recall@20": popularity["recall@20"], "ndcg@20": popularity["ndcg@20"],
                     "seconds_per_epoch": None, "epochs": None, "seconds_total": None})
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print()
    print(common.ranking_table(rows))
    print(f"\n{common.versions()}, threads {args.threads}")


if __name__ == "__main__":
    main()
