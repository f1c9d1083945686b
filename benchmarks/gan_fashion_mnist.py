"""Fashion-MNIST GAN at the same wall-clock budget, with and without the contrastive
discriminator: ``fashion-mnist-dcgan`` (plain non-saturating loss) vs ``fashion-mnist-contrad``
(ContraD, Jeong & Shin 2021), same networks, batch, optimiser and minutes of training.

Reported per run: Fréchet distance, precision and recall (k=3) of 2000 generated vs 2000
held-out test images **in the feature space of a contrastkit SimCLR encoder trained on the real
training images** (trained once and cached; not Inception FID), the discriminator's
linear-probe accuracy on the real labels (and the same network at initialisation), the steps
done. The two methods of a seed train at the same time, one thread each, so that both see the
same load of a shared machine.

    python benchmarks/gan_fashion_mnist.py --minutes 6 --seeds 0 1 --out /tmp/gan_bench
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import add_overrides, parser, set_args

METHODS = ("dcgan", "contrad")


def ensure_feature_encoder(overrides: list[str]) -> str:
    """Train (once) the metrics' cached feature encoder, so the timed runs do not (``overrides``:
    the runs', which may change what it is, e.g. ``gan.feature_steps``)."""
    import torch

    from contrastkit.data.image.spec import load_split
    from contrastkit.recipes import load_config
    from contrastkit.tasks.gan.evaluation import feature_encoder

    torch.set_num_threads(2)
    cfg = load_config("fashion-mnist-contrad", [*overrides, "train.num_threads=2"])
    train = load_split(cfg.data, "train")
    _, _, where = feature_encoder(cfg, torch.device("cpu"), train.images.shape[-1], train.channels, len(train),
                                  verbose=True)
    return where


def run_pair(seed: int, minutes: float, out: Path, overrides: list[str]) -> dict[str, dict[str, Any]]:
    procs = {}
    for method in METHODS:
        run = out / f"{method}-s{seed}"
        cmd = [sys.executable, "-m", "contrastkit", "train", f"fashion-mnist-{method}", "--out", str(run),
               *set_args([f"train.seed={seed}", f"train.time_budget_minutes={minutes}", "train.max_steps=1000000",
                          "train.num_threads=1", "train.progress=false", *overrides])]
        log = (out / f"{method}-s{seed}.log").open("w")
        procs[method] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), run, log)
    rows = {}
    for method, (proc, run, log) in procs.items():
        code = proc.wait()
        log.close()
        if code != 0:
            raise SystemExit(f"{method} seed {seed} failed (exit {code}); see {log.name}")
        res = json.loads((run / "results.json").read_text())
        ev = res["eval"]
        rows[method] = {
            "seed": seed, "steps": res["train"]["steps"], "train_s": res["train"]["seconds"], "fd": ev["fd"],
            "precision": ev["precision"], "recall": ev["recall"], "d_probe": ev["d_probe"]["accuracy"],
            "d_probe_init": ev["d_probe_random_init"]["accuracy"], "real_fd": ev["real_vs_real"]["fd"],
        }
        print(json.dumps({method: rows[method]}), flush=True)
    return rows


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--minutes", type=float, default=6.0, help="training minutes per run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", default="/tmp/gan_bench")
    add_overrides(ap, "both recipes (e.g. gan.eval_samples=500 for a quick check)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"feature encoder: {ensure_feature_encoder(args.set)} ({time.time() - t0:.0f}s)", flush=True)
    results = [run_pair(seed, args.minutes, out, args.set) for seed in args.seeds]
    (out / "summary.json").write_text(json.dumps(results, indent=2))
    print("\n| method | seed | steps | FD (ck feats) ↓ | precision ↑ | recall ↑ | D probe % | D at init % |")
    print("|---|---|---|---|---|---|---|---|")
    for pair in results:
        for method in METHODS:
            r = pair[method]
            print(f"| {method} | {r['seed']} | {r['steps']} | {r['fd']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} "
                  f"| {100 * r['d_probe']:.1f} | {100 * r['d_probe_init']:.1f} |")
    print(f"\nreal train vs real test FD (the floor): {results[0]['dcgan']['real_fd']:.3f}")
    print(f"total {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
