"""CartPole from pixels: DQN + CURL vs DQN on pixels alone vs DQN on the true state (and ATC),
same environment steps and seeds; mean ± std over seeds of the final greedy return, the
validation return curve, and the state-probe R² of the frozen encoder.

Each run is `contrastkit train cartpole-<recipe> --set train.seed=S --set rl.steps=N` in its
own process (``--parallel`` at a time, one torch thread each); the table goes to stdout and
everything to OUT/summary.json.

    .venv/bin/python benchmarks/rl_cartpole.py --steps 10000 --seeds 0 1 2 --out /tmp/rl_bench
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

RECIPES = {"curl": "cartpole-pixels-curl", "pixels": "cartpole-pixels", "state": "cartpole-state",
           "atc": "cartpole-pixels-atc"}


def run_one(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out) / f"{method}-seed{seed}"
    if not (out / "results.json").is_file() or "eval" not in json.loads((out / "results.json").read_text()):
        cmd = [sys.executable, "-m", "contrastkit", "train", RECIPES[method], "--out", str(out), "--quiet",
               "--set", f"train.seed={seed}", "--set", f"rl.steps={args.steps}",
               "--set", f"rl.eval_every={args.eval_every}", "--set", "eval.plots=false"]
        for extra in args.set:
            cmd += ["--set", extra]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{method} seed {seed} failed:\n{done.stderr[-2000:]}")
        print(f"{method} seed {seed}: {time.perf_counter() - t0:.0f}s", flush=True)
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return results


def summarise(method: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    finals = [r["eval"]["final_return"]["mean"] for r in runs]
    curves = [{c["step"]: c["value"] for c in r["validation"]["curve"]} for r in runs]  # greedy validation returns
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    out: dict[str, Any] = {
        "method": method,
        "final_return_mean": float(np.mean(finals)),
        "final_return_std": float(np.std(finals)),
        "final_return_per_seed": finals,
        "curve": [{"step": s, "mean": float(np.mean([c[s] for c in curves])),
                   "std": float(np.std([c[s] for c in curves]))} for s in steps],
        "train_seconds_mean": float(np.mean([r["train"]["seconds"] for r in runs])),
    }
    probes = [r["eval"]["probe"] for r in runs if r["eval"].get("probe")]
    if probes:
        for which in ("trained", "random_init"):
            out[f"probe_r2_{which}"] = {k: float(np.mean([p[which][k] for p in probes])) for k in probes[0][which]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["curl", "pixels", "state"], choices=sorted(RECIPES))
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="extra --set for every run")
    parser.add_argument("--out", default="/tmp/rl_bench")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    jobs = [(m, s) for s in args.seeds for m in args.methods]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.parallel) as pool:
        done = list(pool.map(lambda job: run_one(job[0], job[1], args), jobs))
    by_method = {m: [r for (mm, _), r in zip(jobs, done, strict=True) if mm == m] for m in args.methods}
    summary = [summarise(m, runs) for m, runs in by_method.items()]
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nCartPole-v1, {args.steps} env steps, seeds {args.seeds}, wall {time.perf_counter() - t0:.0f}s")
    print(f"{'method':<8}{'final return':>18}{'train s':>9}  probe R² (x, x_dot, theta, theta_dot) trained / random init")
    for s in summary:
        probe = ""
        if "probe_r2_trained" in s:
            t, r = s["probe_r2_trained"].values(), s["probe_r2_random_init"].values()
            probe = " ".join(f"{a:.2f}" for a in t) + "  /  " + " ".join(f"{b:.2f}" for b in r)
        ret = f"{s['final_return_mean']:.1f} ± {s['final_return_std']:.1f}"
        print(f"{s['method']:<8}{ret:>18}{s['train_seconds_mean']:>9.0f}  {probe}")
    print("\nvalidation return curve (mean over seeds):")
    steps = [c["step"] for c in summary[0]["curve"]]
    print(f"{'step':>8}" + "".join(f"{s['method']:>10}" for s in summary))
    for i, step in enumerate(steps):
        print(f"{step:>8}" + "".join(f"{s['curve'][i]['mean']:>10.1f}" if i < len(s["curve"]) else f"{'':>10}"
                                     for s in summary))


if __name__ == "__main__":
    main()
