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
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from contrastkit.config import Config, load_config
from contrastkit.data.interactions import InteractionData
from contrastkit.runs import new_run_dir
from contrastkit.tasks.runner import run_all

HERE = Path(__file__).resolve().parent
# (ours, RecBole model or None), in the order they run: each anchor right after its counterpart
PLAN = [("lightgcn", "LightGCN"), ("sgl", "SGL"), ("mf", "BPR"), ("simgcl", None), ("xsimgcl", None)]


def run_ours(model: str, root: str, out: Path, threads: int, overrides: list[str]) -> tuple[dict[str, Any], Config]:
    cfg = load_config(
        f"ml100k-{model}",
        [f"recsys.root={root}", f"train.num_threads={threads}", "train.progress=false", *overrides],
    )
    run_dir = new_run_dir(cfg, str(out / f"contrastkit-{model}"), resume=False)
    t0 = time.perf_counter()
    res = run_all(cfg, run_dir, progress=False, verbose=False)
    wall = time.perf_counter() - t0
    test = res["eval"]["test"]
    es = res["early_stopping"]
    row = {
        "library": "contrastkit",
        "model": model,
        "valid_ndcg@20": es["best"],
        "recall@20": test[model]["recall@20"],
        "ndcg@20": test[model]["ndcg@20"],
        "seconds_per_epoch": es["seconds_per_epoch"],
        "epochs": res["train"]["epochs_done"],
        "best_epoch": es["best_epoch"],
        "seconds_to_best": es["seconds_to_best"],
        "seconds_total": wall,
        "popularity": test["popularity"],
        "run_dir": str(run_dir),
    }
    return row, cfg


def export_split(run_dir: Path, folder: Path, name: str) -> None:
    """Our split as RecBole benchmark files <name>.{train,valid,test}.inter (the user's own ids)."""
    data = InteractionData.load(run_dir / "data")
    folder.mkdir(parents=True, exist_ok=True)
    for part in ("train", "valid", "test"):
        pairs = getattr(data, part)
        lines = ["user_id:token\titem_id:token"]
        lines += [f"{data.user_ids[u]}\t{data.item_ids[i]}" for u, i in pairs.tolist()]
        (folder / f"{name}.{part}.inter").write_text("\n".join(lines) + "\n")


def recbole_params(cfg: Config, model: str) -> dict[str, Any]:
    r, m = cfg.recsys, cfg.method
    params: dict[str, Any] = {
        "embedding_size": m.embedding_dim,
        "learning_rate": cfg.optim.lr,
        "train_batch_size": cfg.train.batch_size,
        "eval_batch_size": 4096,
        "epochs": cfg.train.epochs,
        "eval_step": r.eval_every,
        "stopping_step": r.patience,
        "reg_weight": m.reg,
        "require_pow": True,  # reg · Σ‖e‖² / (2B): the same L2 term as ours
        "seed": cfg.train.seed,
    }
    if model in ("LightGCN", "SGL"):
        params["n_layers"] = m.layers
    if model == "SGL":
        params.update(type=m.augmentation.upper(), drop_ratio=m.drop_ratio,
                      ssl_tau=m.temperature, ssl_weight=m.cl_weight)
    return params


def run_recbole(python: str, data_dir: Path, name: str, model: str, params: dict[str, Any],
                out: Path, threads: int, metrics: tuple[str, ...] = ()) -> dict[str, Any]:
    """One RecBole model through benchmarks/recbole_anchor.py in RecBole's environment: a table row."""
    result_file = out / f"recbole-{model}.json"
    cmd = [python, str(HERE / "recbole_anchor.py"), "--data-dir", str(data_dir), "--dataset", name,
           "--model", model, "--params", json.dumps(params), "--threads", str(threads), "--out", str(result_file),
           *(["--metrics", *metrics] if metrics else [])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out)
    wall = time.perf_counter() - t0
    (out / f"recbole-{model}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"library": "RecBole 1.2.1", "model": model, "error": tail[0]}
    res = json.loads(result_file.read_text())
    return {
        "library": "RecBole 1.2.1", "model": model, "valid_ndcg@20": res["valid"].get("ndcg@20"),
        "recall@20": res["test"].get("recall@20"), "ndcg@20": res["test"].get("ndcg@20"),
        "seconds_per_epoch": res["seconds_per_epoch"], "epochs": res["epochs"], "best_epoch": res.get("best_epoch"),
        "seconds_to_best": res.get("seconds_to_best"), "validation_seconds": res.get("validation_seconds"),
        "seconds_total": wall, "users": res["users"], "items": res["items"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    def f(v: Any, spec: str) -> str:
        return "–" if v is None else format(v, spec)

    lines = [
        "| library | model | valid NDCG@20 | test Recall@20 | test NDCG@20 | s/epoch | epochs (best) | s to best | s total |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['library']} | {r['model']} | failed: {r['error']} | | | | | | |")
            continue
        best = f" ({r['best_epoch']})" if r.get("best_epoch") else ""
        lines.append(
            f"| {r['library']} | {r['model']} | {f(r.get('valid_ndcg@20'), '.4f')} | {f(r['recall@20'], '.4f')} | "
            f"{f(r['ndcg@20'], '.4f')} | {f(r.get('seconds_per_epoch'), '.2f')} | {f(r.get('epochs'), '.0f')}{best} | "
            f"{f(r.get('seconds_to_best'), '.0f')} | {f(r.get('seconds_total'), '.0f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(HERE.parents[1] / "shared" / "data" / "ml-100k"))
    parser.add_argument("--out", default="runs/bench-recsys")
    parser.add_argument("--recbole-python", default=None, help="Python of an environment with RecBole 1.2.1")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every model (both libraries)")
    parser.add_argument("--models", default=",".join(m for m, _ in PLAN))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override for our recipes")
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
        row, cfg = run_ours(ours, args.root, out, args.threads, args.overrides)
        popularity = row.pop("popularity")
        rows.append(row)
        print(table(rows[-1:]).splitlines()[-1], flush=True)
        if anchor and args.recbole_python:
            if not exported:
                export_split(Path(row["run_dir"]), out / "recbole_data" / name, name)
                exported = True
            rows.append(run_recbole(args.recbole_python, (out / "recbole_data").resolve(), name, anchor,
                                    recbole_params(cfg, anchor), out.resolve(), args.threads))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    if popularity is not None:
        rows.append({"library": "contrastkit", "model": "popularity", "valid_ndcg@20": None,
                     "recall@20": popularity["recall@20"], "ndcg@20": popularity["ndcg@20"],
                     "seconds_per_epoch": None, "epochs": None, "seconds_total": None})
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print()
    print(table(rows))
    print(f"\ntorch {torch.__version__}, python {sys.version.split()[0]}, threads {args.threads}")


if __name__ == "__main__":
    main()
