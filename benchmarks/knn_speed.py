"""Weighted kNN evaluation speed (k=200, T=0.1): 10,000 test features against a 60,000-feature
bank (Fashion-MNIST sizes), contrastkit 0.1's implementation (test blocks of 1024 against the
whole bank, one topk) vs the blocked torch search and faiss, interleaved in rounds; checks that
all three predict the same classes.

    python benchmarks/knn_speed.py --dims 128 512 --rounds 3
"""

from __future__ import annotations

import os
import platform
import time
from datetime import date

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/common.py (ENV)

import torch
import torch.nn.functional as F
from common import add_numbers, parser

from contrastkit.evaluate.knn import knn_predict


def previous(train: torch.Tensor, labels: torch.Tensor, test: torch.Tensor, c: int, k: int, t: float) -> torch.Tensor:
    """contrastkit 0.1's knn_predict (the anchor)."""
    bank = F.normalize(train, dim=1)
    preds = []
    with torch.no_grad():
        for start in range(0, test.shape[0], 1024):
            q = F.normalize(test[start : start + 1024], dim=1)
            top_sim, top_idx = (q @ bank.T).topk(k, dim=1)
            votes = torch.zeros(q.shape[0], c).scatter_add_(1, labels[top_idx], (top_sim / t).exp())
            preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def main() -> None:
    ap = parser(__doc__)
    add_numbers(ap, train=60_000, test=10_000, classes=10, rounds=3, threads=2)
    ap.add_argument("--dims", type=int, nargs="+", default=[128, 512])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{date.today()} · {platform.machine()} · {args.threads} threads · torch {torch.__version__} · "
        f"{args.test:,} test x {args.train:,} bank · k=200 · best of {args.rounds} interleaved rounds"
    )
    print("\n| D | 0.1 (anchor) | blocked torch | faiss | torch / anchor | faiss / anchor | same predictions |")
    print("|---|---|---|---|---|---|---|")
    for dim in args.dims:
        g = torch.Generator().manual_seed(dim)
        centers = torch.randn(args.classes, dim, generator=g)
        y = torch.randint(0, args.classes, (args.train + args.test,), generator=g)
        x = centers[y] + 2.0 * torch.randn(args.train + args.test, dim, generator=g)
        train, test, labels = x[: args.train], x[args.train :], y[: args.train]
        def run(name: str, train: torch.Tensor = train, test: torch.Tensor = test,
                labels: torch.Tensor = labels) -> torch.Tensor:
            if name == "anchor":
                return previous(train, labels, test, args.classes, 200, 0.1)
            return knn_predict(train, labels, test, num_classes=args.classes, backend=name)

        best: dict[str, float] = {}
        preds: dict[str, torch.Tensor] = {}
        for _ in range(args.rounds):
            for name in ("anchor", "torch", "faiss"):
                t0 = time.perf_counter()
                preds[name] = run(name)
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
        same = torch.equal(preds["anchor"], preds["torch"]) and torch.equal(preds["anchor"], preds["faiss"])
        differ = int((preds["anchor"] != preds["faiss"]).sum())
        print(
            f"| {dim} | {best['anchor']:.2f} s | {best['torch']:.2f} s | {best['faiss']:.2f} s | "
            f"{best['torch'] / best['anchor']:.2f}× | {best['faiss'] / best['anchor']:.2f}× | "
            f"{'yes' if same else f'no ({differ} of {args.test} differ)'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
