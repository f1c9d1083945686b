"""NT-Xent forward + backward: time and peak extra memory of contrastkit's InfoNCE kernel against
lightly's and pytorch-metric-learning's NTXentLoss, plain ``cross_entropy(z @ z.T / t)`` and the
three matrix products alone (the floor), for 2N rows of width D.

Each measurement runs in its own subprocess (peak memory = the child's ru_maxrss minus its RSS
before the first loss call); contenders are interleaved (round 1: A B C ..., round 2: A B C ...)
because the machine is shared, and the table quotes the best round of each plus the ratios.
A contender whose estimated memory exceeds what the machine has free is reported as
"skipped: needs X GB". Run from an environment with the `bench` extra:

    python benchmarks/loss_speed.py --sizes 512 2048 8192 16384 --rounds 2 --out runs/bench-loss

Small sizes take milliseconds, where a subprocess per measurement is noisy; ``--in-process``
times ours, plain and lightly in one process instead (6 interleaved rounds of 10 repetitions,
best of each; no memory column):

    python benchmarks/loss_speed.py --in-process --sizes 256 512 1024 2048
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from common import ENV  # every contender runs with it (OpenMP threads that do not spin)

CONTENDERS = ("ours", "ours_chunked", "lightly", "pml", "plain", "floor")
LABELS = {
    "ours": "contrastkit info_nce",
    "ours_chunked": "contrastkit info_nce, chunked",
    "lightly": "lightly NTXentLoss",
    "pml": "pytorch-metric-learning NTXentLoss",
    "plain": "plain cross_entropy(z @ z.T / t)",
    "floor": "3 matrix products (floor)",
}
FLOOR_BLOCK = 2048  # column block of the floor when the full R x R matrix would exceed 1 GiB
CHUNK = 4096  # chunk of the forced-chunked contender


def estimate_bytes(name: str, rows: int) -> int:
    """Rough peak extra memory in bytes (float32) to decide what can run at all."""
    r2 = rows * rows * 4
    if name == "pml":
        return 3 * 4 * rows**3  # a (2N) x (2N (2N - 2)) pair mask and its float copies
    if name == "lightly":
        return 6 * r2
    if name == "plain":
        return 3 * r2
    if name == "floor":
        return r2 if r2 <= 1 << 30 else rows * FLOOR_BLOCK * 4 * 2
    return 1 << 30  # ours: tiles of at most 64 MiB, or the kept logits below 512 MiB


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 1 << 34


# ----------------------------------------------------------------------------- child


def run_child(name: str, rows: int, dim: int, reps: int, warmup: int, threads: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    temperature = 0.5
    n = rows // 2
    base = torch.randn(rows, dim)
    index = (torch.arange(rows) + n) % rows

    if name in ("ours", "ours_chunked"):
        from contrastkit.losses import info_nce

        chunk: int | str = CHUNK if name == "ours_chunked" else "auto"

        def loss_fn(z: torch.Tensor) -> torch.Tensor:
            return info_nce(z, positive_index=index, temperature=temperature, chunk_size=chunk)

    elif name == "lightly":
        from lightly.loss import NTXentLoss

        crit = NTXentLoss(temperature=temperature)

        def loss_fn(z: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = crit(z[:n], z[n:])
            return out

    elif name == "pml":
        from pytorch_metric_learning.losses import NTXentLoss as PMLNTXent

        crit_pml = PMLNTXent(temperature=temperature)
        labels = torch.arange(n).repeat(2)

        def loss_fn(z: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = crit_pml(z, labels)
            return out

    elif name == "plain":

        def loss_fn(z: torch.Tensor) -> torch.Tensor:
            zn = F.normalize(z, dim=1)
            logits = zn @ zn.T / temperature
            logits.fill_diagonal_(float("-inf"))
            return F.cross_entropy(logits, index)

    elif name == "floor":
        full = rows * rows * 4 <= 1 << 30

        def loss_fn(z: torch.Tensor) -> torch.Tensor:  # timed as forward + "backward" below
            return z

    else:
        raise SystemExit(f"unknown contender {name}")

    def once() -> float:
        z = base.clone().requires_grad_()
        t0 = time.perf_counter()
        if name == "floor":
            with torch.no_grad():
                zd = z.detach()
                if full:
                    s = zd @ zd.T  # forward logits
                    g1 = s @ zd  # d/dq
                    g2 = s.T @ zd  # d/dk
                else:
                    g1 = torch.zeros_like(zd)
                    for c0 in range(0, rows, FLOOR_BLOCK):
                        zb = zd[c0 : c0 + FLOOR_BLOCK]
                        s = zd @ zb.T
                        g1 += s @ zb
                        g2 = s.T @ zd
                del s, g1, g2
        else:
            loss_fn(z).backward()
        return time.perf_counter() - t0

    before = _rss_kb()
    for _ in range(warmup):
        once()
    seconds = [once() for _ in range(reps)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "extra_mb": max(0, peak - before) / 1024.0}


def in_process(sizes: list[int], dim: int, threads: int, rounds: int = 6, reps: int = 10) -> None:
    """Best forward + backward time of ours, plain and lightly, interleaved in one process."""
    import torch
    import torch.nn.functional as F

    from contrastkit.losses import info_nce

    torch.set_num_threads(threads)
    try:
        from lightly.loss import NTXentLoss
    except ImportError:
        NTXentLoss = None
    print(f"{date.today()} · {threads} threads · torch {torch.__version__} · D={dim} · in one process, "
          f"best of {rounds} interleaved rounds x {reps}")
    print("\n| 2N | ours | plain | lightly | ours / plain | ours / lightly |\n|---|---|---|---|---|---|")
    for rows in sizes:
        n = rows // 2
        z = torch.randn(rows, dim)
        index = (torch.arange(rows) + n) % rows
        crit = NTXentLoss(temperature=0.5) if NTXentLoss is not None else None

        def run(name: str, x: torch.Tensor, index: torch.Tensor = index, n: int = n, crit: Any = crit) -> torch.Tensor:
            if name == "ours":
                return info_nce(x, positive_index=index, temperature=0.5)
            if name == "lightly":
                out: torch.Tensor = crit(x[:n], x[n:])
                return out
            zn = F.normalize(x, dim=1)
            logits = zn @ zn.T / 0.5
            logits.fill_diagonal_(float("-inf"))
            return F.cross_entropy(logits, index)

        fns = ["ours", "plain", *(["lightly"] if crit is not None else [])]
        best = {name: float("inf") for name in fns}
        for _ in range(rounds):
            for name in fns:
                for _ in range(reps):
                    x = z.clone().requires_grad_()
                    t0 = time.perf_counter()
                    run(name, x).backward()
                    best[name] = min(best[name], time.perf_counter() - t0)
        light = f"{best['lightly'] * 1e3:.2f} ms" if "lightly" in best else "–"
        ratio_l = f"{best['ours'] / best['lightly']:.2f}×" if "lightly" in best else "–"
        print(f"| {rows:,} | {best['ours'] * 1e3:.2f} ms | {best['plain'] * 1e3:.2f} ms | {light} | "
              f"{best['ours'] / best['plain']:.2f}× | {ratio_l} |", flush=True)


# ----------------------------------------------------------------------------- driver


def reps_for(rows: int) -> tuple[int, int]:
    """(timed repetitions, warm-up runs) for a size."""
    if rows <= 2048:
        return 5, 1
    if rows <= 8192:
        return 3, 1
    if rows <= 16384:
        return 2, 1
    return 1, 0


def measure(python: str, name: str, rows: int, dim: int, threads: int, timeout: float) -> dict[str, Any]:
    reps, warmup = reps_for(rows)
    cmd = [
        python, __file__, "--child", name, "--rows", str(rows), "--dim", str(dim),
        "--reps", str(reps), "--warmup", str(warmup), "--threads", str(threads),
    ]
    env = {**os.environ, **ENV}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
        return {"error": f"exit {done.returncode}: {tail[0][:120]}"}
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 8192, 16384, 32768, 65536, 131072])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds per size")
    ap.add_argument("--big-rounds", type=int, default=1, help="rounds for sizes >= 65536")
    ap.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    ap.add_argument("--python", default=sys.executable, help="interpreter with torch, lightly, PML")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-loss"))
    ap.add_argument("--child", choices=CONTENDERS)
    ap.add_argument("--rows", type=int)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--in-process", action="store_true", help="time small sizes in one process")
    args = ap.parse_args()
    if args.in_process:
        in_process(args.sizes, args.dim, args.threads)
        return
    if args.child:
        print(json.dumps(run_child(args.child, args.rows, args.dim, args.reps, args.warmup, args.threads)))
        return

    args.out.mkdir(parents=True, exist_ok=True)
    free = _available_bytes()
    results: dict[str, dict[str, Any]] = {}
    for rows in args.sizes:
        rounds = args.big_rounds if rows >= 65536 else args.rounds
        row: dict[str, Any] = {}
        for rnd in range(rounds):
            for name in args.contenders:
                if name == "ours_chunked" and not 8192 <= rows <= 16384:
                    continue  # below: too small to need it; above: "auto" already chunks
                need = estimate_bytes(name, rows)
                if need > 0.5 * free:  # the machine is shared: leave the others room
                    row[name] = {"skipped": f"skipped: needs {need / 2**30:.0f} GB"}
                    continue
                res = measure(args.python, name, rows, args.dim, args.threads, args.timeout)
                print(f"2N={rows} round {rnd + 1} {name}: {res}", flush=True)
                prev = row.get(name)
                if "error" in res:
                    row.setdefault(name, res)
                    continue
                best = min(res["seconds"])
                if prev is None or "best" not in prev:
                    row[name] = {"best": best, "extra_mb": res["extra_mb"], "all": list(res["seconds"])}
                else:
                    prev["best"] = min(prev["best"], best)
                    prev["extra_mb"] = max(prev["extra_mb"], res["extra_mb"])
                    prev["all"] += res["seconds"]
        results[str(rows)] = row
        (args.out / "loss_speed.json").write_text(json.dumps(results, indent=2))

    import torch

    header = (
        f"{date.today()} · {platform.machine()} · {args.threads} threads · torch {torch.__version__} · "
        f"D={args.dim} · {' '.join(f'{k}={v}' for k, v in ENV.items())} · best of the interleaved "
        "rounds · extra memory = peak RSS − RSS before"
    )
    cols = [c for c in args.contenders]
    lines = [header, "", "| 2N | " + " | ".join(LABELS[c] for c in cols) + " | ours / lightly | ours / floor | ours / plain |",
             "|---" * (len(cols) + 4) + "|"]

    def cell(entry: dict[str, Any] | None) -> str:
        if entry is None:
            return "–"
        if "skipped" in entry:
            return entry["skipped"]
        if "error" in entry:
            return entry["error"]
        best = entry["best"]
        t = f"{best * 1e3:.1f} ms" if best < 1 else f"{best:.2f} s"
        return f"{t} ({entry['extra_mb']:.0f} MB)"

    def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
        if not a or not b or "best" not in a or "best" not in b:
            return "–"
        return f"{a['best'] / b['best']:.2f}×"

    for rows in args.sizes:
        row = results[str(rows)]
        lines.append(
            f"| {rows:,} | " + " | ".join(cell(row.get(c)) for c in cols)
            + f" | {ratio(row.get('ours'), row.get('lightly'))} | {ratio(row.get('ours'), row.get('floor'))}"
            + f" | {ratio(row.get('ours'), row.get('plain'))} |"
        )
    table = "\n".join(lines)
    (args.out / "loss_speed.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
