"""A hyper-parameter search on MovieLens 100K: ``contrastkit sweep`` of SimGCL against RecBole's
own search (``HyperTuning``, hyperopt's TPE) of its SGL, the same number of trials over the same
kind of space, on the very same split.

Ours: ``contrastkit sweep ml100k-simgcl`` over ``method.temperature`` (0.05–0.5, log),
``method.cl_weight`` (0.01–1, log), ``method.noise_eps`` (0.01–0.5) and ``optim.lr``
(0.0005–0.02, log); TPE, the median pruner on the validation NDCG@20 measured every
``--eval-every`` epochs, each trial capped at ``--epochs`` epochs; chosen on validation
NDCG@20, then the chosen configuration and the recipe's default trained and tested once.
RecBole 1.2.1 (``--recbole-python``: benchmarks/recbole_anchor.py ``--tune``) has no SimGCL;
its SGL searches ``ssl_tau``, ``ssl_weight``, ``drop_ratio`` (SGL's edge dropout where SimGCL
has its noise) and ``learning_rate`` over the same ranges, same epochs and validation interval,
every trial tested as RecBole's objective function does; the best trial is chosen on
validation NDCG@20.

    python benchmarks/sweep_ml100k.py --root ../shared/data/ml-100k --out runs/bench-sweep-ml100k \
        --recbole-python /path/to/recbole-venv/bin/python
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common
from recsys_ml100k import anchor_params, export_split

from contrastkit.recipes import load_config

SPACE = {  # ours: (low, high, log); RecBole SGL's name for the same knob
    "method.temperature": (0.05, 0.5, True, "ssl_tau"),
    "method.cl_weight": (0.01, 1.0, True, "ssl_weight"),
    "method.noise_eps": (0.01, 0.5, False, "drop_ratio"),
    "optim.lr": (0.0005, 0.02, True, "learning_rate"),
}


def run_ours(args: Any, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "contrastkit", "sweep", "ml100k-simgcl", "--trials", str(args.trials), "--out", str(out),
           "--seed", "0"]
    for key, (low, high, log, _) in SPACE.items():
        cmd += ["--space", f"{key}={low}:{high}" + (":log" if log else "")]
    for s in (f"recsys.root={args.root}", f"train.epochs={args.epochs}", f"recsys.eval_every={args.eval_every}",
              f"train.num_threads={args.threads}", *args.overrides):
        cmd += ["--set", s]
    t0 = time.perf_counter()
    with (out.parent / "ours.log").open("w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True, env={**os.environ, **common.ENV})
    wall = time.perf_counter() - t0
    res = json.loads((out / "sweep.json").read_text())["results"]
    states = [t["state"] for t in res["trials"]]
    final = res["final"]
    return {
        "library": "contrastkit", "model": "SimGCL", "trials": len(states), "complete": states.count("complete"),
        "pruned": states.count("pruned"), "best_valid_ndcg@20": res["best"]["value"],
        "best_test_ndcg@20": final["best"]["figures"]["ndcg@20"], "best_test_recall@20": final["best"]["figures"]["recall@20"],
        "default_test_ndcg@20": final["default"]["figures"]["ndcg@20"],
        "default_valid_ndcg@20": final["default"]["validation_value"],
        "best_params": res["best"]["params"], "wall_seconds": wall,
    }


def run_recbole(args: Any, out: Path, run_dir: Path) -> dict[str, Any]:
    name = "ml100k_ck"
    export_split(run_dir, out / "recbole_data" / name, name)
    cfg = load_config("ml100k-sgl", [f"recsys.root={args.root}", *args.overrides])  # SGL's other settings
    params = anchor_params(cfg, "SGL")
    params.update(epochs=args.epochs, eval_step=args.eval_every)
    space: dict[str, dict[str, list[float]]] = {"uniform": {}, "loguniform": {}}
    for low, high, log, theirs in SPACE.values():
        if log:
            space["loguniform"][theirs] = [math.log(low), math.log(high)]  # hyperopt: bounds of log(value)
        else:
            space["uniform"][theirs] = [low, high]
    result = out / "recbole-sgl-tune.json"
    cmd = [args.recbole_python, str(common.HERE / "recbole_anchor.py"), "--data-dir", str((out / "recbole_data").resolve()),
           "--dataset", name, "--model", "SGL", "--params", json.dumps(params), "--threads", str(args.threads),
           "--tune", json.dumps(space), "--algo", "bayes", "--max-evals", str(args.trials), "--out", str(result.resolve())]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out, env={**os.environ, **common.ENV})
    wall = time.perf_counter() - t0
    (out / "recbole-sgl-tune.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"RecBole failed; see {out / 'recbole-sgl-tune.log'}")
    res = json.loads(result.read_text())
    return {
        "library": "RecBole 1.2.1", "model": "SGL", "trials": len(res["trials"]), "complete": len(res["trials"]),
        "pruned": 0, "best_valid_ndcg@20": res["best"]["valid_ndcg@20"], "best_test_ndcg@20": res["best"]["test_ndcg@20"],
        "best_test_recall@20": res["best"]["test_recall@20"], "best_params": res["best"]["params"], "wall_seconds": wall,
    }


def table(rows: list[dict[str, Any]]) -> str:
    def f(v: Any, spec: str) -> str:
        return "–" if v is None else format(v, spec)

    lines = ["| library | model | trials (pruned) | best valid NDCG@20 | its test NDCG@20 | its test Recall@20 | "
             "default test NDCG@20 | wall s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['library']} | {r['model']} | {r['trials']} ({r['pruned']}) | {f(r['best_valid_ndcg@20'], '.4f')} | "
                     f"{f(r['best_test_ndcg@20'], '.4f')} | {f(r['best_test_recall@20'], '.4f')} | "
                     f"{f(r.get('default_test_ndcg@20'), '.4f')} | {f(r['wall_seconds'], '.0f')} |")
    return "\n".join(lines)


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--root", default=str(common.SHARED_DATA / "ml-100k"))
    p.add_argument("--out", default="runs/bench-sweep-ml100k")
    p.add_argument("--recbole-python", default=None, help="Python of an environment with RecBole 1.2.1 (else ours alone)")
    common.add_numbers(p, trials=20, epochs=20, eval_every=2, threads=1)
    common.add_overrides(p, "our recipe", dest="overrides")
    args = p.parse_args()
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    rows = [run_ours(args, out / "contrastkit")]
    print(table(rows), flush=True)
    if args.recbole_python:
        rows.append(run_recbole(args, out, out / "contrastkit" / "default"))
    summary = {"rows": rows, "load_average": [load_before, os.getloadavg()], "versions": common.versions(),
               "trials": args.trials, "epochs": args.epochs, "eval_every": args.eval_every, "threads": args.threads}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    print(table(rows))
    print(f"\n{common.versions()}, threads {args.threads}, load average {load_before} -> {os.getloadavg()}")


if __name__ == "__main__":
    main()
