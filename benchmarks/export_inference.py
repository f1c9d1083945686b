"""Serving an exported encoder: images/s of the ONNX export under onnxruntime vs the same encoder
in PyTorch (eager, no_grad, eval mode), on the same uint8 images, the same threads, interleaved
in rounds; also the export's own parity (max abs difference of the features).

Each encoder is trained for 2 steps on digits (weights do not change the cost) at the size its
data would have: the quickstart's small_resnet at 8 px, ResNet-18 with the CIFAR stem at 32 px
(digits upsampled), convnet5 at 28 px.

    python benchmarks/export_inference.py --rounds 5 --out runs/bench-export
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/common.py (ENV)

import numpy as np
import torch
from common import add_numbers, parser

from contrastkit.cli import main as cli
from contrastkit.export.towers import image_tower
from contrastkit.runner import load_run

ENCODERS = {"small_resnet": 8, "resnet18": 32, "convnet5": 28}


def _train(folder: Path, encoder: str, size: int) -> Path:
    run = folder / encoder
    sets = [f"model.encoder={encoder}", f"data.image_size={size}", "train.max_steps=2", "train.batch_size=64"]
    code = cli(["train", "digits-simclr", "--out", str(run), "--no-eval", "--quiet", *[x for s in sets for x in ("--set", s)]])
    assert code == 0, f"training {encoder} failed"
    return run


def _rate(fn: object, images: np.ndarray, batch: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, len(images), batch):
        fn(images[start : start + batch])  # type: ignore[operator]
    return len(images) / (time.perf_counter() - t0)


def main() -> None:
    ap = parser(__doc__)
    add_numbers(ap, images=4096, batch=256, rounds=5, threads=2)
    ap.add_argument("--out", default="runs/bench-export")
    args = ap.parse_args()

    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for encoder, size in ENCODERS.items():
            run = _train(Path(tmp), encoder, size)
            onnx_path = Path(tmp) / f"{encoder}.onnx"
            assert cli(["export", str(run), "--format", "onnx", "--out", str(onnx_path)]) == 0
            # on the CPU, as exports are checked, and with the benchmark's threads (not the recipe's)
            tower = image_tower(load_run(run, {"train.device": "cpu", "train.num_threads": args.threads}))
            model = tower.pixels_model()
            gen = np.random.default_rng(0)
            images = gen.integers(0, 256, (args.images, tower.channels, tower.size, tower.size)).astype(np.float32) / 255
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = args.threads
            opts.inter_op_num_threads = 1
            session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])

            def run_torch(x: np.ndarray, model: torch.nn.Module = model) -> np.ndarray:
                with torch.no_grad():
                    return model(torch.from_numpy(x)).numpy()

            def run_onnx(x: np.ndarray, session: ort.InferenceSession = session) -> np.ndarray:
                return session.run(None, {"pixels": x})[0]

            diff = float(np.abs(run_torch(images[:512]) - run_onnx(images[:512])).max())
            _rate(run_torch, images[:512], args.batch), _rate(run_onnx, images[:512], args.batch)  # warm-up
            rates: dict[str, list[float]] = {"pytorch": [], "onnxruntime": []}
            for _ in range(args.rounds):
                rates["pytorch"].append(_rate(run_torch, images, args.batch))
                rates["onnxruntime"].append(_rate(run_onnx, images, args.batch))
            row = {
                "encoder": encoder, "size": size, "max_abs_diff": diff,
                **{f"{k}_images_per_s": statistics.mean(v) for k, v in rates.items()},
                **{f"{k}_std": statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in rates.items()},
            }
            row["ratio"] = row["onnxruntime_images_per_s"] / row["pytorch_images_per_s"]
            rows.append(row)
            print(
                f"{encoder:>12} {size:>3}px  pytorch {row['pytorch_images_per_s']:>9.0f} ± {row['pytorch_std']:.0f}  "
                f"onnxruntime {row['onnxruntime_images_per_s']:>9.0f} ± {row['onnxruntime_std']:.0f} images/s  "
                f"({row['ratio']:.2f}×)  max abs diff {diff:.1e}",
                flush=True,
            )
    meta = {
        "date": str(date.today()), "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "threads": args.threads, "torch": torch.__version__, "onnxruntime": ort.__version__,
        "images": args.images, "batch": args.batch, "rounds": args.rounds,
    }
    (out / "export_inference.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"results: {out / 'export_inference.json'}")


if __name__ == "__main__":
    main()
