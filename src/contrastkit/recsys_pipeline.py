"""Recommendation task (task: recsys): interactions → split → MF / LightGCN / SGL / SimGCL /
XSimGCL trained by the generic Trainer with early stopping on validation → full-ranking test.

Run folder: config.yaml, data/ (split.npz, ids.json: the id maps), train_log.csv,
validation_log.csv, checkpoints/{last,best}.pt, embeddings.safetensors (user and item
embeddings of the best epoch), results.json.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrastkit.config import Config, save_config
from contrastkit.data.interactions import (
    FORMATS,
    MOVIELENS,
    SPLITS,
    BPRLoader,
    InteractionData,
    build_interaction_data,
    locate_movielens,
    read_interactions,
)
from contrastkit.errors import UserError, check_choice
from contrastkit.evaluate.ranking import (
    METRICS,
    embedding_scorer,
    popularity_scorer,
    ranking_metrics,
)
from contrastkit.methods.recsys import RECOMMENDERS, SGL_AUGMENTATIONS, GraphRecommender

DATA_DIR = "data"
BEST_CHECKPOINT = "best.pt"
EARLY_STOPPING_FILE = "early_stopping.json"
VALID_LOG = "validation_log.csv"
EMBEDDINGS_FILE = "embeddings.safetensors"


# ----------------------------------------------------------------------------- config


def _metric_key(cfg: Config) -> tuple[str, int]:
    match = re.fullmatch(r"([a-z]+)@(\d+)", cfg.recsys.valid_metric)
    allowed = ", ".join(f"{m}@K" for m in METRICS)
    if not match or match.group(1) not in METRICS:
        raise UserError(f"recsys.valid_metric {cfg.recsys.valid_metric!r} is not allowed; use one of {allowed}")
    k = int(match.group(2))
    if k not in cfg.recsys.eval_ks:
        raise UserError(
            f"recsys.valid_metric {cfg.recsys.valid_metric!r}: K={k} is not in recsys.eval_ks {cfg.recsys.eval_ks}"
        )
    return match.group(1), k


def validate(cfg: Config) -> None:
    """Check the recsys section of a config (UserError naming the bad value)."""
    r = cfg.recsys
    check_choice("recsys.model", r.model, RECOMMENDERS)
    check_choice("recsys.split", r.split, SPLITS)
    check_choice("recsys.format", r.format, FORMATS)
    check_choice("recsys.sgl_augmentation", r.sgl_augmentation, SGL_AUGMENTATIONS)
    for key in ("embedding_dim", "eval_every", "patience", "eval_block_users"):
        if getattr(r, key) < 1:
            raise UserError(f"recsys.{key} must be >= 1, got {getattr(r, key)}")
    for key in ("reg", "cl_weight", "noise_eps", "min_user_interactions", "min_item_interactions", "min_epochs"):
        if getattr(r, key) < 0:
            raise UserError(f"recsys.{key} must be >= 0, got {getattr(r, key)}")
    if r.cl_temperature <= 0:
        raise UserError(f"recsys.cl_temperature must be > 0, got {r.cl_temperature}")
    if r.layers < (0 if r.model == "mf" else 1):
        raise UserError(f"recsys.layers must be >= 1 for {r.model}, got {r.layers}")
    if r.model == "xsimgcl" and not 1 <= r.cl_layer <= r.layers:
        raise UserError(f"recsys.cl_layer must be in [1, {r.layers}] (recsys.layers), got {r.cl_layer}")
    if not 0 <= r.sgl_drop_ratio < 1:
        raise UserError(f"recsys.sgl_drop_ratio must be in [0, 1), got {r.sgl_drop_ratio}")
    if r.max_users is not None and r.max_users < 1:
        raise UserError(f"recsys.max_users must be >= 1 or null, got {r.max_users}")
    ratios = r.split_ratios
    if len(ratios) != 3 or any(x < 0 for x in ratios) or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise UserError(f"recsys.split_ratios must be 3 numbers >= 0 summing to 1 (train, valid, test), got {ratios}")
    if r.split != "leave_one_out" and (ratios[1] <= 0 or ratios[2] <= 0):
        raise UserError(f"recsys.split_ratios needs a validation and a test share > 0, got {ratios}")
    if not r.eval_ks or any(k < 1 for k in r.eval_ks):
        raise UserError(f"recsys.eval_ks must be a list of integers >= 1, got {r.eval_ks}")
    _metric_key(cfg)


# ----------------------------------------------------------------------------- building


def load_data(cfg: Config) -> InteractionData:
    """Read, clean and split the configured interactions."""
    r = cfg.recsys
    if r.data in MOVIELENS:
        source: Path = locate_movielens(r.data, r.root, download=r.download)
    else:
        source = Path(r.root) / r.data if r.root and not Path(r.data).is_absolute() else Path(r.data)
        if not source.exists():
            raise UserError(
                f"recsys.data {r.data!r} is neither a known data set ({', '.join(MOVIELENS)}) nor an "
                f"existing file or folder (looked at {str(source)!r})"
            )
    raw = read_interactions(
        source,
        format=r.format,
        user_column=r.user_column,
        item_column=r.item_column,
        rating_column=r.rating_column,
        time_column=r.time_column,
        separator=r.separator,
    )
    return build_interaction_data(
        raw,
        rating_threshold=r.rating_threshold,
        min_user_interactions=r.min_user_interactions,
        min_item_interactions=r.min_item_interactions,
        max_users=r.max_users,
        split=r.split,
        split_ratios=r.split_ratios,
        seed=cfg.train.seed,
    )


def build_model(cfg: Config, data: InteractionData, device: torch.device) -> GraphRecommender:
    """The configured recommender over the training graph of `data`."""
    r = cfg.recsys
    common: dict[str, Any] = {"dim": r.embedding_dim, "layers": r.layers, "reg": r.reg, "device": device}
    contrast = {"cl_weight": r.cl_weight, "temperature": r.cl_temperature}
    cls = RECOMMENDERS[r.model]
    if r.model == "sgl":
        extra: dict[str, Any] = {
            **contrast,
            "augmentation": r.sgl_augmentation,
            "drop_ratio": r.sgl_drop_ratio,
            "seed": cfg.train.seed,
        }
    elif r.model == "simgcl":
        extra = {**contrast, "eps": r.noise_eps}
    elif r.model == "xsimgcl":
        extra = {**contrast, "eps": r.noise_eps, "cl_layer": r.cl_layer}
    else:
        extra = {}
    model = cls(data.n_users, data.n_items, data.train, **common, **extra)
    return model.to(device)


def _score(model_or_emb: GraphRecommender | tuple[Tensor, Tensor]) -> Any:
    users, items = model_or_emb.embeddings() if isinstance(model_or_emb, GraphRecommender) else model_or_emb
    return embedding_scorer(users, items)


def evaluate_split(
    scorer: Any, data: InteractionData, cfg: Config, split: str, device: torch.device
) -> dict[str, float]:
    """Full-ranking metrics on the valid split (train masked) or test split (train + valid masked)."""
    exclude = [data.train] if split == "valid" else [data.train, data.valid]
    targets = data.valid if split == "valid" else data.test
    return ranking_metrics(
        scorer,
        data.n_users,
        data.n_items,
        targets,
        exclude,
        ks=cfg.recsys.eval_ks,
        popularity=data.item_popularity(),
        block_users=cfg.recsys.eval_block_users,
        device=device,
    )


# ----------------------------------------------------------------------------- early stopping


class EarlyStopping:
    """Trainer callback: validate every `eval_every` epochs, keep the best weights, stop after
    `patience` validations without improvement (not before `min_epochs`). Its state is saved
    with each validation."""

    def __init__(
        self,
        trainer: Any,
        model: GraphRecommender,
        data: InteractionData,
        cfg: Config,
        run_dir: Path,
        device: torch.device,
        verbose: bool = False,
    ) -> None:
        self.trainer, self.model, self.data, self.cfg = trainer, model, data, cfg
        self.run_dir, self.device, self.verbose = Path(run_dir), device, verbose
        self.steps_per_epoch = len(trainer.loader)
        self.metric = cfg.recsys.valid_metric
        self.state: dict[str, Any] = {
            "best": -math.inf,
            "best_epoch": 0,
            "best_elapsed": 0.0,
            "bad": 0,
            "stopped": False,
            "valid_seconds": 0.0,
            "validations": 0,
        }
        self.path = self.run_dir / "checkpoints" / EARLY_STOPPING_FILE

    def load(self) -> None:
        if self.path.is_file():
            self.state.update(json.loads(self.path.read_text()))
            if self.state["best"] is None:
                self.state["best"] = -math.inf

    def _save_state(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        state = dict(self.state)
        state["best"] = None if not math.isfinite(state["best"]) else state["best"]
        tmp.write_text(json.dumps(state))
        tmp.replace(self.path)

    def _log(self, row: dict[str, float]) -> None:
        path = self.run_dir / VALID_LOG
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def __call__(self, step: int, logs: dict[str, float]) -> None:
        last = step >= self.trainer.total_steps
        if step % self.steps_per_epoch != 0 and not last:
            return
        epoch = math.ceil(step / self.steps_per_epoch)
        if epoch % self.cfg.recsys.eval_every != 0 and not last:
            return
        from contrastkit.train import atomic_save

        t0 = time.perf_counter()
        metrics = evaluate_split(_score(self.model), self.data, self.cfg, "valid", self.device)
        seconds = time.perf_counter() - t0
        value = float(metrics[self.metric])
        st = self.state
        st["valid_seconds"] += seconds
        st["validations"] += 1
        if value > st["best"]:
            st.update(best=value, best_epoch=epoch, best_elapsed=self.trainer.elapsed, bad=0)
            atomic_save(
                {"model": self.model.state_dict(), "epoch": epoch, "metric": value, "step": step},
                self.run_dir / "checkpoints" / BEST_CHECKPOINT,
            )
        else:
            st["bad"] += 1
        self._log({"epoch": epoch, "step": step, "loss": logs.get("loss", math.nan), **metrics,
                   "seconds": seconds})
        if self.verbose and not self.cfg.train.progress:
            print(f"epoch {epoch}: valid {self.metric} {value:.4f} (best {st['best']:.4f} at {st['best_epoch']})", flush=True)
        if st["bad"] >= self.cfg.recsys.patience and epoch >= self.cfg.recsys.min_epochs:
            st["stopped"] = True
            self.trainer.stop_reason = "early_stopping"
        self._save_state()
        self.trainer.save_checkpoint()


# ----------------------------------------------------------------------------- run


def run_all(
    cfg: Config, run_dir: Path, *, resume: bool = False, progress: bool = True, verbose: bool = True
) -> dict[str, Any]:
    """Train with early stopping on validation, then evaluate the best epoch on test."""
    from contrastkit.pipeline import setup_runtime, trainer_options, write_results
    from contrastkit.train import Trainer

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    device = setup_runtime(cfg)
    if resume and (run_dir / DATA_DIR).is_dir():
        data = InteractionData.load(run_dir / DATA_DIR)
    else:
        data = load_data(cfg)
        data.save(run_dir / DATA_DIR)
        save_config(cfg, run_dir / "config.yaml")
    model = build_model(cfg, data, device)
    loader = BPRLoader(data.train, data.n_items, batch_size=cfg.train.batch_size, seed=cfg.train.seed, device=device)
    trainer = Trainer(
        model, loader, run_dir, trainer_options(cfg, progress), device=device  # type: ignore[arg-type]
    )
    stopper = EarlyStopping(trainer, model, data, cfg, run_dir, device, verbose)
    trainer.callbacks.append(stopper)
    if resume:
        trainer.load_checkpoint()
        stopper.load()
    if verbose:
        s = data.stats
        print(
            f"training {cfg.recsys.model} on {cfg.recsys.data}: {s['users']} users, {s['items']} items, "
            f"{s['train']}/{s['valid']}/{s['test']} train/valid/test interactions ({cfg.recsys.split} split) "
            f"on {device}: up to {trainer.total_steps} steps of batch {cfg.train.batch_size}",
            flush=True,
        )
    if stopper.state["stopped"] or trainer.step >= trainer.total_steps:
        from contrastkit.train import TrainSummary

        summary = TrainSummary(trainer.step, trainer.step / len(loader), trainer.elapsed, 0.0, math.nan, "early_stopping")
    else:
        summary = trainer.fit()
    st = stopper.state
    epochs = summary.epochs_done
    train_seconds = max(summary.seconds - st["valid_seconds"], 0.0)
    results: dict[str, Any] = {
        "run_dir": str(run_dir),
        "config": cfg.to_dict(),
        "train": asdict(summary),
        "early_stopping": {
            "metric": cfg.recsys.valid_metric,
            "best": st["best"] if math.isfinite(st["best"]) else None,
            "best_epoch": st["best_epoch"],
            "seconds_to_best": st["best_elapsed"],
            "stopped_early": st["stopped"],
            "validations": st["validations"],
            "validation_seconds": st["valid_seconds"],
            "train_seconds": train_seconds,
            "seconds_per_epoch": train_seconds / epochs if epochs else None,
        },
    }
    write_results(run_dir, results)
    if cfg.eval.enabled:
        results["eval"] = evaluate(run_dir, cfg, verbose=verbose)
    results["total_seconds"] = time.perf_counter() - t0
    write_results(run_dir, results)
    return results


def load_best_model(run_dir: Path, cfg: Config, data: InteractionData, device: torch.device) -> GraphRecommender:
    """The run's recommender with the best-validation weights (last checkpoint if none)."""
    from contrastkit.train import load_checkpoint

    model = build_model(cfg, data, device)
    best = Path(run_dir) / "checkpoints" / BEST_CHECKPOINT
    last = Path(run_dir) / "checkpoints" / "last.pt"
    path = best if best.is_file() else last
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} has no checkpoint yet (checkpoints/{BEST_CHECKPOINT} or last.pt)")
    model.load_state_dict(load_checkpoint(path, map_location=device)["model"])
    return model.eval()


def _save_embeddings(run_dir: Path, users: Tensor, items: Tensor) -> None:
    from contrastkit.train import save_safetensors

    save_safetensors({"user": users.cpu().contiguous(), "item": items.cpu().contiguous()}, Path(run_dir) / EMBEDDINGS_FILE)


def load_embeddings(run_dir: Path) -> tuple[Tensor, Tensor]:
    """User (U, D) and item (I, D) embeddings of the run's best epoch (computed if not saved)."""
    path = Path(run_dir) / EMBEDDINGS_FILE
    if path.is_file():
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        return tensors["user"], tensors["item"]
    from contrastkit.pipeline import read_run_config

    cfg = read_run_config(Path(run_dir))
    data = InteractionData.load(Path(run_dir) / DATA_DIR)
    users, items = load_best_model(run_dir, cfg, data, torch.device("cpu")).embeddings()
    _save_embeddings(run_dir, users, items)
    return users, items


def evaluate(run_dir: Path, cfg: Config, *, verbose: bool = True) -> dict[str, Any]:
    """Test (and validation) metrics of the best epoch and of the popularity baseline."""
    from contrastkit.pipeline import setup_runtime

    run_dir = Path(run_dir)
    device = setup_runtime(cfg)
    data = InteractionData.load(run_dir / DATA_DIR)
    model = load_best_model(run_dir, cfg, data, device)
    users, items = model.embeddings()
    _save_embeddings(run_dir, users, items)
    ours = embedding_scorer(users, items)
    pop = popularity_scorer(data.item_popularity())
    t0 = time.perf_counter()
    out: dict[str, Any] = {
        "model": cfg.recsys.model,
        "protocol": (
            f"{cfg.recsys.split} split {cfg.recsys.split_ratios if cfg.recsys.split != 'leave_one_out' else ''}"
            f"; full ranking over {data.n_items} items; train items masked (and valid items on test)"
        ),
        "data": data.stats,
        "test": {
            cfg.recsys.model: evaluate_split(ours, data, cfg, "test", device),
            "popularity": evaluate_split(pop, data, cfg, "test", device),
        },
        "valid": {
            cfg.recsys.model: evaluate_split(ours, data, cfg, "valid", device),
            "popularity": evaluate_split(pop, data, cfg, "valid", device),
        },
    }
    out["seconds"] = time.perf_counter() - t0
    if verbose:
        print(f"evaluated {run_dir} in {out['seconds']:.1f}s", flush=True)
    return out


# ----------------------------------------------------------------------------- reporting


def results_table(ev: dict[str, Any], split: str = "test") -> str:
    """Fixed-width table of the ranking metrics (one row per model, incl. the popularity baseline)."""
    rows_in = ev.get(split, {})
    if not rows_in:
        return "(no ranking evaluation)"
    first = next(iter(rows_in.values()))
    ks = sorted({int(k.split("@")[1]) for k in first if k.startswith("recall@")})
    k_main = 20 if 20 in ks else ks[len(ks) // 2]
    cols = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")]
    cols += [f"{m}@{k_main}" for m in ("precision", "hit", "mrr", "coverage", "tail")]
    headers = ["model", *cols]
    rows = [[name] + [_fmt(r.get(c)) for c in cols] for name, r in rows_in.items()]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_summary(results: dict[str, Any], run_dir: Path) -> None:
    """What `contrastkit train` prints at the end of a recsys run."""
    tr = results.get("train", {})
    es = results.get("early_stopping", {})
    print()
    spe = es.get("seconds_per_epoch")
    per_epoch = "-" if spe is None else f"{spe:.2f}"
    print(
        f"trained {tr.get('steps')} steps ({tr.get('epochs_done', 0):.1f} epochs, "
        f"{per_epoch} s/epoch) in {tr.get('seconds', 0):.0f}s; "
        f"stopped by {tr.get('stopped_by')}; best valid {es.get('metric')} "
        f"{_fmt(es.get('best'))} at epoch {es.get('best_epoch')}"
    )
    ev = results.get("eval")
    if ev:
        users = int(next(iter(ev["test"].values())).get("users", 0))
        print()
        print(f"test split ({users} users; {ev.get('protocol')}):")
        print(results_table(ev))
    print()
    print(f"results: {Path(run_dir) / 'results.json'}")


# ----------------------------------------------------------------------------- use


def _load_run(run_dir: Path) -> tuple[InteractionData, Tensor, Tensor]:
    run_dir = Path(run_dir)
    if not (run_dir / DATA_DIR).is_dir():
        raise UserError(f"{str(run_dir)!r} is not a recsys run folder (no {DATA_DIR}/)")
    data = InteractionData.load(run_dir / DATA_DIR)
    users, items = load_embeddings(run_dir)
    return data, users, items


def recommend(run_dir: Path, user: str, k: int = 10) -> list[dict[str, Any]]:
    """Top-k items for one of the user's own user ids; items the user has seen are excluded."""
    if k < 1:
        raise UserError(f"--k must be >= 1, got {k}")
    data, users, items = _load_run(run_dir)
    u = data.user_index(user)
    scores = items @ users[u]
    all_pairs = data.all_pairs()
    seen = all_pairs[all_pairs[:, 0] == u, 1]
    scores[torch.as_tensor(seen, dtype=torch.long)] = -torch.inf
    k = min(k, data.n_items - seen.size)
    top = torch.topk(scores, k)
    return [
        {"item": data.item_ids[i], "title": data.title(i), "score": float(s)}
        for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


def similar(run_dir: Path, item: str, k: int = 10) -> list[dict[str, Any]]:
    """The k items whose embeddings are closest (cosine) to one of the user's own item ids."""
    if k < 1:
        raise UserError(f"--k must be >= 1, got {k}")
    data, _users, items = _load_run(run_dir)
    i = data.item_index(item)
    normed = torch.nn.functional.normalize(items, dim=1)
    sims = normed @ normed[i]
    sims[i] = -torch.inf
    top = torch.topk(sims, min(k, data.n_items - 1))
    return [
        {"item": data.item_ids[j], "title": data.title(j), "similarity": float(s)}
        for s, j in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


EMBED_SPECS = ("all", "users", "items")


def embed(run_dir: Path, spec: str | None, out: Path, *, batch_size: int = 512) -> tuple[int, int]:
    """Export embeddings: 'users' / 'items' → .npy (+ <stem>.ids.txt); 'all' (default) → .npz
    with user_embeddings, item_embeddings, user_ids, item_ids."""
    spec = spec or "all"
    check_choice("embedding set (--data) for a recsys run", spec, EMBED_SPECS)
    data, users, items = _load_run(run_dir)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if spec == "all":
        if out.suffix != ".npz":
            raise UserError(f"--out {str(out)!r}: user and item embeddings go into one .npz file; name it *.npz")
        np.savez(
            out,
            user_embeddings=users.numpy(),
            item_embeddings=items.numpy(),
            user_ids=np.asarray(data.user_ids),
            item_ids=np.asarray(data.item_ids),
        )
        return int(users.shape[0] + items.shape[0]), int(users.shape[1])
    matrix, ids = (users, data.user_ids) if spec == "users" else (items, data.item_ids)
    np.save(out, matrix.numpy())
    out.with_name(out.stem + ".ids.txt").write_text("\n".join(ids) + "\n")
    return int(matrix.shape[0]), int(matrix.shape[1])
