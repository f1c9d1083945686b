"""Accuracy at a wall-clock budget: SimCLR on Fashion-MNIST, contrastkit vs lightly, same machine.

contrastkit trains the shipped `fashion-mnist-simclr` recipe for --minutes of training time; the
anchor (benchmarks/lightly_anchor.py, run with --anchor-python from an environment that has
the `bench` extra) trains lightly's SimCLR with the same network, batch, temperature and optimiser
for the same budget. Both encoders are then probed by the same evaluator (kNN, linear probe,
10 labels per class). Prints a markdown table and writes summary.json.

    python benchmarks/fashion_mnist_budget.py --minutes 10 --out runs/bench-fm \
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


def run_ours(minutes: float, out: Path, overrides: list[str]) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "contrastkit", "train", "fashion-mnist-simclr", "--out", str(out), "--quiet",
        *set_args([f"train.time_budget_minutes={minutes}", "train.epochs=1000", "train.checkpoint_every=1000",
                   *overrides]),
    ]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return json.loads((out / "results.json").read_text())


def run_anchor(python: str, minutes: float, out: Path) -> dict[str, Any]:
    from contrastkit.data.image import load_image_dataset
    from contrastkit.evaluate.suite import probe_features
    from contrastkit.recipes import load_config

    cfg = load_config("fashion-mnist-simclr")  # the anchor gets the same network, crop, loss, optimiser
    crop = next(op for op in cfg.data.augment or [] if op["op"] == "random_resized_crop")
    npz = out / "lightly_features.npz"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        python, str(HERE / "lightly_anchor.py"), "--minutes", str(minutes), "--out", str(npz),
        "--width", str(cfg.model.width), "--crop-min", str(crop["scale"][0]),
        "--temperature", str(cfg.method.temperature), "--lr", str(cfg.optim.lr),
    ]
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
    ap.add_argument("--out", type=Path, default=Path("runs/bench-fashion-mnist"))
    ap.add_argument("--anchor-python", default=None, help="python of an environment with lightly")
    ap.add_argument("--skip-ours", action="store_true")
    add_overrides(ap, "our recipe (e.g. eval.max_train_samples=5000 for a quick check)")
    args = ap.parse_args()
    summary: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__, "minutes": args.minutes,
    }
    lines = [
        "| run | train s | steps | pairs/s | linear % | kNN % | 10/class % |",
        "|---|---|---|---|---|---|---|",
    ]
    if not args.skip_ours:
        ours = run_ours(args.minutes, args.out / "contrastkit", args.set)
        summary["contrastkit"] = ours
        enc = ours["eval"]["encoders"]
        lines.append(_row("contrastkit SimCLR", ours["train"], enc["ssl"]))
        lines.append(_row("random-init encoder", {}, enc["random_init"]))
        lines.append(_row("raw pixels", {}, enc["raw_pixels"]))
    if args.anchor_python:
        anchor = run_anchor(args.anchor_python, args.minutes, args.out)
        summary["lightly"] = anchor
        lines.append(_row("lightly SimCLR (anchor)", anchor["train"], anchor["probes"]))
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (args.out / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
