"""Fingerprint every shipped recipe: a few steps of training, then the evaluation, recorded as
per-step logged values, a hash of every trained tensor and every figure of results.json.

Run it on two trees (before and after a refactoring) and compare the two JSON files with
``--compare``: a refactoring that keeps behaviour gives the same losses, weights and figures.

    python tools/recipe_fingerprint.py --out /tmp/fp-before.json --shared ../shared/data
    python tools/recipe_fingerprint.py --out /tmp/fp-after.json --shared ../shared/data
    python tools/recipe_fingerprint.py --compare /tmp/fp-before.json /tmp/fp-after.json

Recipes whose data is not on this machine are skipped (and listed as skipped).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

FMNIST = Path("/usr/share/datasets/fashion-mnist")
SKIP_KEYS = ("seconds", "time", "run_dir", "path", "plots", "feature_encoder", "samples_grid", "file", "_dir")


def recipe_names() -> list[str]:
    folder = resources.files("contrastkit") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def overrides(name: str, recipe: dict[str, Any], shared: Path) -> list[str] | None:
    """The --set overrides of a short, evaluated run of recipe ``name``; None: data missing."""
    task = recipe.get("task", "image")
    data = (recipe.get("data") or {}).get("name", "digits")
    if data == "cifar10" or name.startswith("ml1m"):
        return None
    if data == "fashion-mnist" and not FMNIST.is_dir():
        return None
    common = ["train.log_every=1", "train.progress=false", "train.num_threads=1"]
    if task == "rl":
        sets = ["rl.steps=300", "rl.learning_starts=100", "rl.eval_every=0", "rl.eval_episodes=2",
                "rl.probe_steps=200", "train.checkpoint_every=300"]
        if (recipe.get("method") or {}).get("name") == "atc":
            sets += ["method.pretrain_steps=200", "method.updates=5"]
        return [*sets, "train.progress=false", "train.num_threads=1"]
    common += ["train.max_steps=3", "train.checkpoint_every=3"]
    if task == "image":
        return [*common, "eval.max_train_samples=400", "eval.max_test_samples=200", "eval.plots=false", "eval.few_label_draws=1",
                "eval.finetune_epochs=1", "eval.episodes=20"]
    if task == "gan":
        return [*common, "train.time_budget_minutes=null", "gan.eval_samples=100", "gan.probe_samples=200",
                "gan.feature_steps=10", "gan.sample_every=0"]
    if task == "image_text":
        return [*common, "train.batch_size=32"]
    if task == "text":
        return [*common, f"text.data_root={shared / 'sick'}", "train.batch_size=16"]
    if task == "recsys":
        if (recipe.get("recsys") or {}).get("split") == "given":
            return [*common, f"recsys.root={shared / 'amazon-beauty'}", "recsys.max_users=3000"]
        return [*common, f"recsys.root={shared / 'ml-100k'}", "recsys.max_users=300"]
    if task == "sequences":
        if (recipe.get("sequences") or {}).get("source") == "interactions":
            return [*common, f"recsys.root={shared / 'ml-100k'}", "recsys.max_users=300"]
        return [*common, "sequences.text_file=sick:train", f"sequences.data_root={shared / 'sick'}", "sequences.min_count=2",
                "sequences.neighbours=[man, dog]"]
    raise SystemExit(f"no overrides for task {task!r} of recipe {name}")


def tensor_hashes(obj: Any, prefix: str = "") -> dict[str, str]:
    """sha256 of every tensor in a nested state (a checkpoint's model / policy part)."""
    out: dict[str, str] = {}
    if isinstance(obj, torch.Tensor):
        data = obj.detach().cpu().contiguous()
        raw = data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b""
        out[prefix] = hashlib.sha256(raw).hexdigest()[:16]
    elif isinstance(obj, dict):
        for key, value in obj.items():
            out.update(tensor_hashes(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def weights(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The trained tensors of a checkpoint, whatever its layout."""
    state = checkpoint.get("state", checkpoint)  # a later layout keeps the step's state apart
    return {k: v for k, v in state.items() if k in ("model", "policy", "aux")}


def figures(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every number (and short string) of results.json's evaluation, flattened, timings left out."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            if any(s in str(key) for s in SKIP_KEYS):
                continue
            out.update(figures(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out.update(figures(value, f"{prefix}[{i}]"))
    elif isinstance(obj, float):
        out[prefix] = round(obj, 10)
    elif isinstance(obj, int | str | bool) or obj is None:
        out[prefix] = obj
    return out


def log_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    drop = ("elapsed", "per_sec", "throughput", "time", "seconds")
    return [{k: v for k, v in row.items() if not any(d in k for d in drop)} for row in rows]


def fingerprint(name: str, sets: list[str], python: str, work: Path) -> dict[str, Any]:
    run = work / name
    cmd = [python, "-m", "contrastkit", "train", name, "--out", str(run), "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONHASHSEED": "0"})
    out: dict[str, Any] = {"exit": proc.returncode, "seconds": round(time.perf_counter() - t0, 1)}
    if proc.returncode != 0:
        out["stderr"] = proc.stderr[-2000:]
        return out
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    out["weights"] = tensor_hashes(weights(ckpt))
    out["log"] = log_rows(run / "train_log.csv")
    results = json.loads((run / "results.json").read_text())
    out["train"] = {k: results.get("train", {}).get(k) for k in ("steps", "stopped_by")}
    out["eval"] = figures(results.get("eval", {}))
    return out


def compare(a_path: str, b_path: str) -> int:
    a, b = json.loads(Path(a_path).read_text()), json.loads(Path(b_path).read_text())
    bad = 0
    for name in sorted(set(a) | set(b)):
        ra, rb = a.get(name), b.get(name)
        if ra is None or rb is None:
            print(f"{name}: only in {'the second' if ra is None else 'the first'}")
            continue
        if ra.get("skipped") or rb.get("skipped"):
            print(f"{name}: skipped")
            continue
        diffs = []
        for part in ("exit", "weights", "log", "train", "eval"):
            if ra.get(part) != rb.get(part):
                if isinstance(ra.get(part), dict) and isinstance(rb.get(part), dict):
                    keys = sorted(k for k in set(ra[part]) | set(rb[part]) if ra[part].get(k) != rb[part].get(k))
                    diffs.append(f"{part}: {len(keys)} differ, e.g. {keys[:4]}")
                else:
                    diffs.append(f"{part} differs")
        bad += bool(diffs)
        print(f"{name}: {'SAME' if not diffs else '; '.join(diffs)}")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON file to write")
    parser.add_argument("--shared", default="../shared/data", help="the shared data folder (ml-100k, sick, amazon-beauty)")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--recipes", nargs="*", default=None)
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"))
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    shared = Path(args.shared).resolve()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fingerprint-") as tmp:
        for name in args.recipes or recipe_names():
            text = (resources.files("contrastkit") / "recipes" / f"{name}.yaml").read_text()
            sets = overrides(name, yaml.safe_load(text), shared)
            if sets is None:
                result[name] = {"skipped": True}
                print(f"{name}: skipped (data not here)", flush=True)
                continue
            result[name] = fingerprint(name, sets, args.python, Path(tmp))
            print(f"{name}: exit {result[name]['exit']} in {result[name]['seconds']} s", flush=True)
            Path(args.out).write_text(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
