"""RecBole anchor for benchmarks/recsys_ml100k.py and benchmarks/recsys_given_beauty.py: train one
RecBole model on a split written by contrastkit (RecBole "benchmark files":
<name>.train/.valid/.test.inter) and report its metrics, its seconds per epoch, and every
validation with the wall time since the start of ``fit`` (so that "time to the best validation
epoch" is measured as contrastkit's: training plus the validations before it).

Runs in a separate environment holding RecBole 1.2.1 (it needs NumPy < 2 and SciPy < 1.12):
    python benchmarks/recbole_anchor.py --data-dir D --dataset NAME --model LightGCN --params JSON --out F
Prints nothing but RecBole's own log; writes a JSON with valid/test metrics and timings.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--model", required=True, help="RecBole model name, e.g. LightGCN or SGL")
    parser.add_argument("--params", default="{}", help="JSON of RecBole config overrides")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--metrics", nargs="+", default=["Recall", "NDCG", "Precision", "Hit", "MRR"])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    # RecBole 1.2.1 reloads its own best checkpoint with torch.load's old default; torch >= 2.6
    # loads weights only and refuses it. The file is the one RecBole just wrote (trusted).
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    torch.set_num_threads(args.threads)
    params: dict[str, Any] = {
        "data_path": args.data_dir,
        "benchmark_filename": ["train", "valid", "test"],
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "load_col": {"inter": ["user_id", "item_id"]},
        "eval_args": {"group_by": "user", "order": "RO", "mode": "full"},
        "metrics": args.metrics,
        "topk": [10, 20, 50],
        "valid_metric": "NDCG@20",
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1, "alpha": 1.0,
                                  "dynamic": False, "candidate_num": 0},
        "device": "cpu",
        "use_gpu": False,
        "show_progress": False,
        "save_dataset": False,
        "save_dataloaders": False,
        "checkpoint_dir": str(Path(args.out).parent / "recbole_saved"),
        "seed": 0,
        "reproducibility": True,
    }
    params.update(json.loads(args.params))
    config = Config(model=args.model, dataset=args.dataset, config_dict=params)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    epoch_times: list[float] = []
    validations: list[dict[str, float]] = []
    original_train, original_valid = trainer._train_epoch, trainer._valid_epoch
    t_fit = [0.0]

    def timed_epoch(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        out = original_train(*a, **k)
        epoch_times.append(time.perf_counter() - t0)
        return out

    def timed_valid(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        score, result = original_valid(*a, **k)
        validations.append({"epoch": len(epoch_times), "score": float(score),
                             "seconds": time.perf_counter() - t0, "elapsed": time.perf_counter() - t_fit[0]})
        return score, result

    trainer._train_epoch = timed_epoch  # type: ignore[method-assign]
    trainer._valid_epoch = timed_valid  # type: ignore[method-assign]
    t_fit[0] = time.perf_counter()
    _score, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    fit_seconds = time.perf_counter() - t_fit[0]
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    best = max(validations, key=lambda v: v["score"]) if validations else None
    result = {
        "model": args.model,
        "valid": {k.lower(): float(v) for k, v in dict(best_valid).items()},
        "test": {k.lower(): float(v) for k, v in dict(test).items()},
        "epochs": len(epoch_times),
        "seconds_per_epoch": sum(epoch_times) / max(len(epoch_times), 1),
        "validation_seconds": sum(v["seconds"] for v in validations),
        "best_epoch": best["epoch"] if best else None,
        "seconds_to_best": best["elapsed"] if best else None,
        "validations": validations,
        "fit_seconds": fit_seconds,
        "users": int(dataset.user_num - 1),
        "items": int(dataset.item_num - 1),
    }
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
