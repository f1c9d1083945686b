"""RecBole anchor for benchmarks/recsys_ml100k.py and benchmarks/recsys_given_beauty.py: train one
RecBole model on a split written by contrastkit (RecBole "benchmark files":
<name>.train/.valid/.test.inter) and report its metrics, its seconds per epoch, and every
validation with the wall time since the start of ``fit`` (so that "time to the best validation
epoch" is measured as contrastkit's: training plus the validations before it).

Runs in a separate environment holding RecBole 1.2.1 (it needs NumPy < 2 and SciPy < 1.12):
    python benchmarks/recbole_anchor.py --data-dir D --dataset NAME --model LightGCN --params JSON --out F
Prints nothing but RecBole's own log; writes a JSON with valid/test metrics and timings. With
``--tune SPACE --max-evals N``: RecBole's hyper-parameter search (HyperTuning) instead, every
trial's validation and test NDCG@20, the best trial by validation and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any


def fit(args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
    """Train one RecBole model with the script's settings and ``overrides``; its metrics and timings."""
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
    params.update(overrides)
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
    best_score, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    fit_seconds = time.perf_counter() - t_fit[0]
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    best = max(validations, key=lambda v: v["score"]) if validations else None
    return {
        "model": args.model,
        "best_valid_score": float(best_score),
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


def tune(args: argparse.Namespace) -> dict[str, Any]:
    """RecBole's own hyper-parameter search (``recbole.trainer.HyperTuning``, hyperopt's TPE for
    ``--algo bayes``) over ``--tune`` (RecBole's params_dict: ``uniform`` / ``loguniform`` (bounds
    in natural log) / ``choice``), ``--max-evals`` trials, each chosen on validation NDCG@20 and
    tested as RecBole's objective function does; no early end of the search (its default stops
    after 10 trials without progress)."""
    from recbole.trainer import HyperTuning

    trials: list[dict[str, Any]] = []

    def objective(config_dict: dict[str, Any], _files: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        res = fit(args, config_dict)
        trials.append({"params": dict(config_dict), "valid_ndcg@20": res["valid"].get("ndcg@20"),
                       "test_ndcg@20": res["test"].get("ndcg@20"), "test_recall@20": res["test"].get("recall@20"),
                       "epochs": res["epochs"], "seconds": time.perf_counter() - t0})
        return {"model": args.model, "best_valid_score": res["best_valid_score"], "valid_score_bigger": True,
                "best_valid_result": res["valid"], "test_result": res["test"]}

    t0 = time.perf_counter()
    hp = HyperTuning(objective, params_dict=json.loads(args.tune), algo=args.algo, max_evals=args.max_evals,
                     early_stop=args.max_evals + 1)
    hp.run()
    best = max(trials, key=lambda t: t["valid_ndcg@20"])
    return {"model": args.model, "algo": args.algo, "trials": trials, "best": best, "wall_seconds": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--model", required=True, help="RecBole model name, e.g. LightGCN or SGL")
    parser.add_argument("--params", default="{}", help="JSON of RecBole config overrides")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--metrics", nargs="+", default=["Recall", "NDCG", "Precision", "Hit", "MRR"])
    parser.add_argument("--tune", default=None, help="JSON params_dict of a RecBole HyperTuning search (else one run)")
    parser.add_argument("--algo", default="bayes", choices=["bayes", "random", "exhaustive"])
    parser.add_argument("--max-evals", type=int, default=20)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    # RecBole 1.2.1 reloads its own best checkpoint with torch.load's old default; torch >= 2.6
    # loads weights only and refuses it. The file is the one RecBole just wrote (trusted).
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    result = tune(args) if args.tune else fit(args, {})
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
