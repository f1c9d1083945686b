"""Task ``recsys``: recommendation from implicit feedback.

interactions → clean → per-user split → MF / LightGCN / SGL / SimGCL / XSimGCL (the method)
trained by the generic Trainer with early stopping on validation → full-ranking test against a
popularity baseline; then ``contrastkit recommend`` / ``similar`` / ``embed``.

Run folder, besides the common files: data/ (split.npz, ids.json: the id maps),
validation_log.csv, checkpoints/best.pt, embeddings.safetensors (user and item embeddings of
the best epoch).
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from contrastkit.config import Config
from contrastkit.data.interactions import (
    FORMATS,
    GIVEN_FORMATS,
    MOVIELENS,
    SPLITS,
    BPRLoader,
    InteractionData,
    build_interaction_data,
    load_given,
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
from contrastkit.evaluate.tables import format_table
from contrastkit.methods.recsys import GraphRecommender
from contrastkit.methods.registry import get_method
from contrastkit.options import option
from contrastkit.runs import load_run_checkpoint
from contrastkit.tasks.base import RunContext, Task, register_task
from contrastkit.train import TrainSummary, atomic_save, load_checkpoint, save_safetensors

DATA_DIR = "data"
BEST_CHECKPOINT = "best.pt"
EARLY_STOPPING_FILE = "early_stopping.json"
VALID_LOG = "validation_log.csv"
EMBEDDINGS_FILE = "embeddings.safetensors"
EMBED_SPECS = ("all", "users", "items")


@dataclass
class RecsysConfig:
    """Recommendation data, split and evaluation (the model is the recipe's ``method``)."""

    data: str = option("ml-100k", "ml-100k | ml-1m | ml-10m | ml-20m, or a file / folder path")
    root: str | None = option(None, "folder holding a named MovieLens data set")
    download: bool = option(False, "fetch a named MovieLens data set from GroupLens if absent")
    format: str = option("auto", "file format of the interactions", choices=FORMATS)
    user_column: str = option("user_id", "user column of a table")
    item_column: str = option("item_id", "item column of a table")
    rating_column: str | None = option("rating", "rating column of a table (null: none)")
    time_column: str | None = option("timestamp", "time column of a table (null: none)")
    separator: str | None = option(None, "column separator of a text table (default: by format)")
    rating_threshold: float | None = option(4.0, "ratings >= this are positives; null keeps all")
    min_user_interactions: int = option(0, "k-core filtering of users (0 or 1: off)", ge=0)
    min_item_interactions: int = option(0, "k-core filtering of items (0 or 1: off)", ge=0)
    max_users: int | None = option(None, "keep the N users with the smallest ids (quick runs)", ge=1)
    split: str = option(
        "random", "per-user split (always with validation); given: the train / valid / test files",
        choices=(*SPLITS, "given"),
    )
    train_file: str | None = option(None, "split=given: the train file (relative to recsys.root if set)")
    valid_file: str | None = option(
        None, "split=given: the validation file (null: carved from train by split_ratios[0]:[1])"
    )
    test_file: str | None = option(None, "split=given: the test file (relative to recsys.root if set)")
    given_format: str = option(
        "auto", "split=given: pairs (user item [rating]), lists (user item item ...) or a table format",
        choices=GIVEN_FORMATS,
    )
    split_ratios: list[float] = option(help="train, valid, test shares", factory=lambda: [0.8, 0.1, 0.1], ge=0)
    eval_ks: list[int] = option(help="K of the ranking metrics", factory=lambda: [10, 20, 50], ge=1)
    valid_metric: str = option("ndcg@20", "early stopping and best checkpoint (metric@K)")
    eval_every: int = option(1, "epochs between validation passes", ge=1)
    patience: int = option(10, "validation passes without improvement before stopping", ge=1)
    min_epochs: int = option(0, "never stop early before this epoch (contrastive models start slowly)", ge=0)
    eval_block_users: int = option(1024, "users scored at once in full ranking", ge=1)

    def check_values(self, prefix: str) -> None:
        ratios = self.split_ratios
        if len(ratios) != 3 or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
            raise UserError(
                f"{prefix}.split_ratios must be 3 numbers >= 0 summing to 1 (train, valid, test), got {ratios}"
            )
        if self.split == "given":
            check_given(self, prefix)
        elif self.split != "leave_one_out" and (ratios[1] <= 0 or ratios[2] <= 0):
            raise UserError(f"{prefix}.split_ratios needs a validation and a test share > 0, got {ratios}")
        if not self.eval_ks:
            raise UserError(f"{prefix}.eval_ks must list at least one K")
        metric_key(self)


def check_given(r: RecsysConfig, prefix: str) -> None:
    """split=given: train and test files named; the filters that would change the split are off."""
    missing = [k for k in ("train_file", "test_file") if not getattr(r, k)]
    if missing:
        raise UserError(f"{prefix}.split=given needs {' and '.join(f'{prefix}.{k}' for k in missing)} (paths)")
    if r.min_user_interactions > 1 or r.min_item_interactions > 1:
        raise UserError(
            f"{prefix}.split=given keeps the published split: set {prefix}.min_user_interactions and "
            "min_item_interactions to 0 (k-core filtering would change it)"
        )
    if r.valid_file is None and r.split_ratios[1] <= 0:
        raise UserError(
            f"{prefix}.split=given without {prefix}.valid_file carves validation from train: "
            f"{prefix}.split_ratios needs a validation share > 0, got {r.split_ratios}"
        )


def split_protocol(r: RecsysConfig) -> str:
    """How the data was split, for results.json."""
    if r.split == "given":
        files = [r.train_file, r.valid_file or "(valid carved from train)", r.test_file]
        return f"given split {' / '.join(str(f) for f in files)}"
    return f"{r.split} split {r.split_ratios if r.split != 'leave_one_out' else ''}"


def metric_key(r: RecsysConfig) -> tuple[str, int]:
    """(metric, K) of ``valid_metric``, checked against the metrics and ``eval_ks``."""
    match = re.fullmatch(r"([a-z]+)@(\d+)", r.valid_metric)
    if not match or match.group(1) not in METRICS:
        allowed = ", ".join(f"{m}@K" for m in METRICS)
        raise UserError(f"recsys.valid_metric {r.valid_metric!r} is not allowed; use one of {allowed}")
    k = int(match.group(2))
    if k not in r.eval_ks:
        raise UserError(f"recsys.valid_metric {r.valid_metric!r}: K={k} is not in recsys.eval_ks {r.eval_ks}")
    return match.group(1), k


# ----------------------------------------------------------------------------- building


def load_data(cfg: Config) -> InteractionData:
    """Read, clean and split the configured interactions."""
    r: RecsysConfig = cfg.recsys
    if r.split == "given":
        return _load_given(r, cfg.train.seed)
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
        source, format=r.format, user_column=r.user_column, item_column=r.item_column,
        rating_column=r.rating_column, time_column=r.time_column, separator=r.separator,
    )
    return build_interaction_data(
        raw, rating_threshold=r.rating_threshold, min_user_interactions=r.min_user_interactions,
        min_item_interactions=r.min_item_interactions, max_users=r.max_users, split=r.split,
        split_ratios=r.split_ratios, seed=cfg.train.seed,
    )


def _given_path(r: RecsysConfig, name: str) -> Path | None:
    value = getattr(r, name)
    if value is None:
        return None
    return Path(r.root) / value if r.root and not Path(value).is_absolute() else Path(value)


def _load_given(r: RecsysConfig, seed: int) -> InteractionData:
    check_given(r, "recsys")
    train, valid, test = (_given_path(r, k) for k in ("train_file", "valid_file", "test_file"))
    assert train is not None and test is not None
    return load_given(
        train, valid, test, format=r.given_format, rating_threshold=r.rating_threshold, max_users=r.max_users,
        split_ratios=r.split_ratios, seed=seed, user_column=r.user_column, item_column=r.item_column,
        rating_column=r.rating_column, time_column=r.time_column, separator=r.separator,
    )


def build_model(cfg: Config, data: InteractionData, device: torch.device) -> GraphRecommender:
    """The configured recommender over the training graph of ``data``."""
    spec = get_method(cfg.method.name, "recsys")
    model = spec.build(
        cfg.method, n_users=data.n_users, n_items=data.n_items, train_pairs=data.train, device=device,
        seed=cfg.train.seed,
    )
    assert isinstance(model, GraphRecommender)
    return model.to(device)


def evaluate_split(scorer: Any, data: InteractionData, cfg: Config, split: str, device: torch.device) -> dict[str, float]:
    """Full-ranking metrics on the valid split (train masked) or test split (train + valid masked)."""
    exclude = [data.train] if split == "valid" else [data.train, data.valid]
    targets = data.valid if split == "valid" else data.test
    return ranking_metrics(
        scorer, data.n_users, data.n_items, targets, exclude, ks=cfg.recsys.eval_ks,
        popularity=data.item_popularity(), block_users=cfg.recsys.eval_block_users, device=device,
    )


# ----------------------------------------------------------------------------- early stopping


class EarlyStopping:
    """Trainer callback: validate every ``eval_every`` epochs, keep the best weights, stop after
    ``patience`` validations without improvement (not before ``min_epochs``). Its state is saved
    with each validation, so a resumed run continues it."""

    def __init__(self, trainer: Any, model: GraphRecommender, data: InteractionData, ctx: RunContext) -> None:
        self.trainer, self.model, self.data, self.ctx = trainer, model, data, ctx
        self.cfg = ctx.cfg
        self.steps_per_epoch = len(trainer.loader)
        self.metric = ctx.cfg.recsys.valid_metric
        self.state: dict[str, Any] = {
            "best": -math.inf, "best_epoch": 0, "best_elapsed": 0.0, "bad": 0, "stopped": False,
            "valid_seconds": 0.0, "validations": 0,
        }
        self.path = ctx.run_dir / "checkpoints" / EARLY_STOPPING_FILE

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
        path = self.ctx.run_dir / VALID_LOG
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
        t0 = time.perf_counter()
        metrics = evaluate_split(
            embedding_scorer(*self.model.embeddings()), self.data, self.cfg, "valid", self.ctx.device
        )
        seconds = time.perf_counter() - t0
        value = float(metrics[self.metric])
        st = self.state
        st["valid_seconds"] += seconds
        st["validations"] += 1
        if value > st["best"]:
            st.update(best=value, best_epoch=epoch, best_elapsed=self.trainer.elapsed, bad=0)
            atomic_save(
                {"model": self.model.state_dict(), "epoch": epoch, "metric": value, "step": step},
                self.ctx.run_dir / "checkpoints" / BEST_CHECKPOINT,
            )
        else:
            st["bad"] += 1
        self._log({"epoch": epoch, "step": step, "loss": logs.get("loss", math.nan), **metrics, "seconds": seconds})
        if self.ctx.verbose and not self.cfg.train.progress:
            print(f"epoch {epoch}: valid {self.metric} {value:.4f} (best {st['best']:.4f} at {st['best_epoch']})", flush=True)
        if st["bad"] >= self.cfg.recsys.patience and epoch >= self.cfg.recsys.min_epochs:
            st["stopped"] = True
            self.trainer.stop_reason = "early_stopping"
        self._save_state()
        self.trainer.save_checkpoint()

    def results(self, summary: TrainSummary) -> dict[str, Any]:
        """The ``early_stopping`` entry of results.json."""
        st = self.state
        train_seconds = max(summary.seconds - st["valid_seconds"], 0.0)
        return {
            "metric": self.metric,
            "best": st["best"] if math.isfinite(st["best"]) else None,
            "best_epoch": st["best_epoch"],
            "seconds_to_best": st["best_elapsed"],
            "stopped_early": st["stopped"],
            "validations": st["validations"],
            "validation_seconds": st["valid_seconds"],
            "train_seconds": train_seconds,
            "seconds_per_epoch": train_seconds / summary.epochs_done if summary.epochs_done else None,
        }


# ----------------------------------------------------------------------------- reload


def load_best_model(run_dir: Path, cfg: Config, data: InteractionData, device: torch.device) -> GraphRecommender:
    """The run's recommender with the best-validation weights (last checkpoint if none)."""
    model = build_model(cfg, data, device)
    best = Path(run_dir) / "checkpoints" / BEST_CHECKPOINT
    state = load_checkpoint(best, map_location=device) if best.is_file() else load_run_checkpoint(run_dir, device)
    model.load_state_dict(state["model"])
    return model.eval()


def save_embeddings(run_dir: Path, users: Tensor, items: Tensor) -> None:
    save_safetensors({"user": users.cpu().contiguous(), "item": items.cpu().contiguous()}, Path(run_dir) / EMBEDDINGS_FILE)


def load_embeddings(run_dir: Path) -> tuple[Tensor, Tensor]:
    """User (U, D) and item (I, D) embeddings of the run's best epoch (computed if not saved)."""
    path = Path(run_dir) / EMBEDDINGS_FILE
    if path.is_file():
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        return tensors["user"], tensors["item"]
    from contrastkit.runs import read_run_config

    cfg = read_run_config(Path(run_dir))
    data = InteractionData.load(Path(run_dir) / DATA_DIR)
    users, items = load_best_model(run_dir, cfg, data, torch.device("cpu")).embeddings()
    save_embeddings(run_dir, users, items)
    return users, items


def _load_run(run_dir: Path) -> tuple[InteractionData, Tensor, Tensor]:
    run_dir = Path(run_dir)
    if not (run_dir / DATA_DIR).is_dir():
        raise UserError(f"{str(run_dir)!r} is not a recsys run folder (no {DATA_DIR}/)")
    data = InteractionData.load(run_dir / DATA_DIR)
    users, items = load_embeddings(run_dir)
    return data, users, items


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


# ----------------------------------------------------------------------------- the task


@register_task
class RecsysTask(Task):
    """Recommendation from implicit feedback, evaluated by full ranking on a held-out split."""

    name = "recsys"
    sections: ClassVar[dict[str, type]] = {"recsys": RecsysConfig}
    default_method = "lightgcn"
    unit = "interactions"

    def data(self, ctx: RunContext) -> InteractionData:
        if ctx.world_size > 1:
            raise UserError("task recsys trains in one process (full-graph steps); run it without --nproc / torchrun")
        folder = ctx.run_dir / DATA_DIR
        if ctx.resume and folder.is_dir():
            return InteractionData.load(folder)
        data = load_data(ctx.cfg)
        data.save(folder)
        return data

    def model(self, ctx: RunContext, data: InteractionData) -> nn.Module:
        return build_model(ctx.cfg, data, ctx.device)

    def loader(self, ctx: RunContext, data: InteractionData, model: nn.Module) -> BPRLoader:
        return BPRLoader(data.train, data.n_items, batch_size=ctx.cfg.train.batch_size, seed=ctx.cfg.train.seed, device=ctx.device)

    def callbacks(self, ctx: RunContext, trainer: Any, data: InteractionData, model: nn.Module) -> list[Any]:
        assert isinstance(model, GraphRecommender)
        stopper = EarlyStopping(trainer, model, data, ctx)
        if ctx.resume:
            stopper.load()
            if stopper.state["stopped"]:
                trainer.stop_reason = "early_stopping"
        ctx.state["stopper"] = stopper
        return [stopper]

    def describe(self, ctx: RunContext, data: InteractionData) -> str:
        s, r = data.stats, ctx.cfg.recsys
        source = r.train_file if r.split == "given" else r.data
        return (
            f"training {ctx.cfg.method.name} on {source}: {s['users']} users, {s['items']} items, "
            f"{s['train']}/{s['valid']}/{s['test']} train/valid/test interactions ({r.split} split) on {ctx.device}"
        )

    def after_training(self, ctx: RunContext, data: Any, model: nn.Module, summary: TrainSummary) -> dict[str, Any]:
        return {"early_stopping": ctx.state["stopper"].results(summary)}

    def evaluate(self, run_dir: Path, cfg: Config, *, verbose: bool = True) -> dict[str, Any]:
        """Test (and validation) metrics of the best epoch and of the popularity baseline."""
        from contrastkit.tasks.runner import setup_runtime

        device = setup_runtime(cfg, distributed=False)
        data = InteractionData.load(Path(run_dir) / DATA_DIR)
        users, items = load_best_model(run_dir, cfg, data, device).embeddings()
        save_embeddings(run_dir, users, items)
        scorers = {cfg.method.name: embedding_scorer(users, items), "popularity": popularity_scorer(data.item_popularity())}
        t0 = time.perf_counter()
        r = cfg.recsys
        out: dict[str, Any] = {
            "model": cfg.method.name,
            "protocol": (
                f"{split_protocol(r)}"
                f"; full ranking over {data.n_items} items; train items masked (and valid items on test)"
            ),
            "data": data.stats,
        }
        for split in ("test", "valid"):
            out[split] = {name: evaluate_split(s, data, cfg, split, device) for name, s in scorers.items()}
        out["seconds"] = time.perf_counter() - t0
        if verbose:
            print(f"evaluated {run_dir} in {out['seconds']:.1f}s", flush=True)
        return out

    def results_table(self, ev: dict[str, Any], split: str = "test") -> str:
        rows_in = ev.get(split, {})
        if not rows_in:
            return "(no ranking evaluation)"
        first = next(iter(rows_in.values()))
        ks = sorted({int(k.split("@")[1]) for k in first if k.startswith("recall@")})
        k_main = 20 if 20 in ks else ks[len(ks) // 2]
        cols = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")]
        cols += [f"{m}@{k_main}" for m in ("precision", "hit", "mrr", "coverage", "tail")]
        rows = [[name] + [_fmt(r.get(c)) for c in cols] for name, r in rows_in.items()]
        users = int(first.get("users", 0))
        return f"{split} split ({users} users; {ev.get('protocol')}):\n" + format_table(["model", *cols], rows)

    def headline(self, results: dict[str, Any]) -> str:
        tr, es = results.get("train", {}), results.get("early_stopping", {})
        spe = es.get("seconds_per_epoch")
        return (
            f"trained {tr.get('steps')} steps ({tr.get('epochs_done', 0):.1f} epochs, "
            f"{'-' if spe is None else f'{spe:.2f}'} s/epoch) in {tr.get('seconds', 0):.0f}s; "
            f"stopped by {tr.get('stopped_by')}; best valid {es.get('metric')} "
            f"{_fmt(es.get('best'))} at epoch {es.get('best_epoch')}"
        )

    # ------------------------------------------------------------------ use

    def embed(self, run_dir: Path, cfg: Config, spec: str | None, out: Path, *, batch_size: int) -> tuple[int, int]:
        """'users' / 'items' → .npy (+ <stem>.ids.txt); 'all' (default) → .npz with
        user_embeddings, item_embeddings, user_ids, item_ids."""
        spec = spec or "all"
        check_choice("embedding set (--data) for a recsys run", spec, EMBED_SPECS)
        data, users, items = _load_run(run_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        if spec == "all":
            if out.suffix != ".npz":
                raise UserError(f"--out {str(out)!r}: user and item embeddings go into one .npz file; name it *.npz")
            np.savez(
                out, user_embeddings=users.numpy(), item_embeddings=items.numpy(),
                user_ids=np.asarray(data.user_ids), item_ids=np.asarray(data.item_ids),
            )
            return int(users.shape[0] + items.shape[0]), int(users.shape[1])
        matrix, ids = (users, data.user_ids) if spec == "users" else (items, data.item_ids)
        np.save(out, matrix.numpy())
        out.with_name(out.stem + ".ids.txt").write_text("\n".join(ids) + "\n")
        return int(matrix.shape[0]), int(matrix.shape[1])

    def interaction_data(self, run_dir: Path, cfg: Config) -> InteractionData | None:
        """The run's split interactions (users' histories, item titles), for ``contrastkit serve``."""
        return InteractionData.load(Path(run_dir) / DATA_DIR)

    def recommend(self, run_dir: Path, user: str, k: int = 10) -> list[dict[str, Any]]:
        """Top-k items for one of the user's own user ids; items the user has seen are excluded."""
        data, users, items = _load_run(run_dir)
        u = data.user_index(user)
        scores = items @ users[u]
        all_pairs = data.all_pairs()
        seen = all_pairs[all_pairs[:, 0] == u, 1]
        scores[torch.as_tensor(seen, dtype=torch.long)] = -torch.inf
        top = torch.topk(scores, min(k, data.n_items - seen.size))
        return [
            {"item": data.item_ids[i], "title": data.title(i), "score": float(s)}
            for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]

    def similar(self, run_dir: Path, item: str, k: int = 10) -> list[dict[str, Any]]:
        """The k items whose embeddings are closest (cosine) to one of the user's own item ids."""
        data, _users, items = _load_run(run_dir)
        i = data.item_index(item)
        normed = torch.nn.functional.normalize(items, dim=1)
        sims = normed @ normed[i]
        sims[i] = -torch.inf
        top = torch.topk(sims, min(k, data.n_items - 1))
        return [
            {"item": data.item_ids[j], "title": data.title(j), "score": float(s)}
            for s, j in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]
