"""Accuracy at a wall-clock budget on Fashion-MNIST, contrastkit vs lightly, same machine.

contrastkit trains a shipped recipe (--recipe, default `fashion-mnist-simclr`; also the SwAV, DINO
and NNCLR recipes, with --set overrides such as multi-crop `data.crops` or another encoder) for
--minutes of training time; the anchor (benchmarks/lightly_anchor.py, run with --anchor-python
from an environment that has the `bench` extra) trains lightly's implementation of the same method
with the same network, batch, heads, crops, temperatures and optimiser for the same budget. Both
encoders are then probed by the same evaluator (kNN, linear probe, 10 labels per class). Prints a
markdown table and writes summary.json.

    python benchmarks/fashion_mnist_budget.py --minutes 10 --out runs/bench-fm \
        --anchor-python /path/to/bench-venv/bin/python
    python benchmarks/fashion_mnist_budget.py --recipe fashion-mnist-swav --minutes 10 --out runs/bench-swav \
        --anchor-python /path/to/bench-venv/bin/python
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import add_numbers, add_overrides, parser, set_args

HERE = Path(__file__).resolve().parent


def run_ours(recipe: str, minutes: float, out: Path, overrides: list[str]) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "contrastkit", "train", recipe, "--out", str(out), "--quiet",
        *set_args([f"train.time_budget_minutes={minutes}", "train.epochs=1000", "train.checkpoint_every=1000",
                   *overrides]),
    ]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return json.loads((out / "results.json").read_text())


def anchor_options(cfg: Any) -> list[str]:
    """The anchor's command-line options that give it our recipe's network, batch, heads, crops,
    temperatures and optimiser."""
    m, model = cfg.method, cfg.model
    crop = next(op for op in cfg.data.augment or [] if op["op"] == "random_resized_crop")
    opts: dict[str, Any] = {
        "method": m.name, "width": model.width, "crop-min": crop["scale"][0], "lr": cfg.optim.lr,
        "weight-decay": cfg.optim.weight_decay, "batch-size": cfg.train.batch_size,
        "hidden": model.projection_hidden_dim, "out-dim": model.projection_dim,
    }
    crops = getattr(cfg.data, "crops", None) or []
    if len(crops) > 1:  # multi-crop: the local group
        local = crops[1]
        opts.update({"local-crops": local["count"], "local-size": local["size"],
                     "local-scale-min": local["scale"][0], "local-scale-max": local["scale"][1]})
    if m.name in ("simclr", "nnclr", "swav"):
        opts["temperature"] = m.temperature
    if m.name == "swav":
        opts.update({"prototypes": m.prototypes, "sinkhorn-iterations": m.sinkhorn_iterations,
                     "sinkhorn-epsilon": m.sinkhorn_epsilon, "freeze-prototypes-steps": m.freeze_prototypes_steps})
    if m.name == "dino":
        opts.update({"prototypes": m.out_dim, "bottleneck": model.projection_dim, "temperature": m.student_temperature,
                     "teacher-temp": m.teacher_temperature, "warmup-teacher-temp": m.warmup_teacher_temperature,
                     "warmup-fraction": m.warmup_teacher_temperature_fraction, "momentum": m.momentum})
    if m.name == "nnclr":
        opts["queue"] = m.support_set_size
    return [x for k, v in opts.items() for x in (f"--{k}", str(v))]


def run_anchor(python: str, recipe: str, minutes: float, out: Path, overrides: list[str]) -> dict[str, Any]:
    from contrastkit.data.image import load_image_dataset
    from contrastkit.evaluate.suite import probe_features
    from contrastkit.recipes import load_config

    cfg = load_config(recipe, overrides)  # the anchor gets the same network, crops, loss, optimiser
    npz = out / "lightly_features.npz"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [python, str(HERE / "lightly_anchor.py"), "--minutes", str(minutes), "--out", str(npz), *anchor_options(cfg)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    data = np.load(npz)
    train = load_image_dataset("fashion-mnist", "train")
    test = load_image_dataset("fashion-mnist", "test")
    assert train.labels is not None and test.labels is not None
    probes = probe_features(
        torch.from_numpy(data["train"]), train.labels, torch.from_numpy(data["test"]), test.labels,
        num_classes=10, shots=[10], draws=5,
    )
    return {
        "method": cfg.method.name,
        "train": {"seconds": float(data["seconds"]), "steps": int(data["steps"]),
                  "throughput": float(data["pairs_per_sec"]), "unit": "images",
                  "final_loss": float(data["final_loss"])},
        "probes": probes,
    }


def _row(name: str, train: dict[str, Any], probes: dict[str, Any]) -> str:
    fl = probes.get("few_label", {}).get("shots", {})
    ten = fl.get("10") or fl.get(10) or {}
    ten_s = f"{100 * ten['mean']:.1f} ± {100 * ten['std']:.1f}" if ten else "-"
    return (
        f"| {name} | {train.get('seconds', 0):.0f} | {train.get('steps', '-')} | "
        f"{train.get('throughput', 0):.0f} | {100 * probes['linear_probe']['accuracy']:.1f} | "
        f"{100 * probes['knn']['accuracy']:.1f} | {ten_s} |"
    )


def main() -> None:
    ap = parser(__doc__)
    add_numbers(ap, minutes=10.0)
    ap.add_argument("--recipe", default="fashion-mnist-simclr", help="our recipe (its method is the anchor's)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-fashion-mnist"))
    ap.add_argument("--anchor-python", default=None, help="python of an environment with lightly")
    ap.add_argument("--skip-ours", action="store_true")
    add_overrides(ap, "our recipe (e.g. eval.max_train_samples=5000 for a quick check)")
    args = ap.parse_args()
    summary: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__, "minutes": args.minutes, "recipe": args.recipe, "overrides": args.set,
    }
    lines = [
        "| run | train s | steps | pairs/s | linear % | kNN % | 10/class % |",
        "|---|---|---|---|---|---|---|",
    ]
    if not args.skip_ours:
        ours = run_ours(args.recipe, args.minutes, args.out / "contrastkit", args.set)
        summary["contrastkit"] = ours
        enc = ours["eval"]["encoders"]
        lines.append(_row(f"contrastkit {args.recipe}", ours["train"], enc["ssl"]))
        for name, key in (("random-init encoder", "random_init"), ("raw pixels", "raw_pixels")):
            if key in enc:  # eval.baselines (on by default)
                lines.append(_row(name, {}, enc[key]))
    if args.anchor_python:
        anchor = run_anchor(args.anchor_python, args.recipe, args.minutes, args.out, args.set)
        summary["lightly"] = anchor
        lines.append(_row(f"lightly {anchor['method']} (anchor)", anchor["train"], anchor["probes"]))
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (args.out / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
