"""Task ``recsys``: recommendation from implicit feedback.

interactions → clean → per-user split (or a given split) → MF / LightGCN / SGL / SimGCL /
XSimGCL (the method) trained by the one loop with early stopping on validation → full-ranking
test against a popularity baseline; then ``contrastkit recommend`` / ``similar`` / ``embed``.

Run folder, besides the common files: data/ (split.npz, ids.json: the id maps),
validation_log.csv, checkpoints/best.pt, embeddings.safetensors (user and item embeddings of
the best epoch).
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

import torch
from torch import Tensor

from contrastkit.config import Config
from contrastkit.data.interactions import BPRLoader, InteractionData
from contrastkit.data.interactions.spec import RecsysConfig, run_split, saved_split
from contrastkit.evaluate.ranking import embedding_scorer
from contrastkit.evaluate.recommendation import (
    evaluate_recommender,
    fmt_metric,
    ranking_table,
    split_metrics,
)
from contrastkit.index.keyed import KeyedVectors
from contrastkit.index.vectors import (
    UserItemVectors,
    cached_vectors,
    save_vectors,
    similar_items,
)
from contrastkit.methods.recsys import GraphRecommender
from contrastkit.methods.registry import get_method
from contrastkit.runs import CHECKPOINTS, load_run_weights
from contrastkit.tasks.base import RunContext, Task, TrainedRun, number, register_task
from contrastkit.training import (
    Callback,
    GradientStep,
    Trainer,
    Training,
    TrainSummary,
    atomic_save,
    load_checkpoint,
)
from contrastkit.training.loggers import CsvLogger

BEST_CHECKPOINT = "best.pt"
VALID_LOG = "validation_log.csv"


def build_model(cfg: Config, data: InteractionData, device: torch.device) -> GraphRecommender:
    """The configured recommender over the training graph of ``data``."""
    spec = get_method(cfg.method.name, "recsys")
    model = spec.build(
        cfg.method, n_users=data.n_users, n_items=data.n_items, train_pairs=data.train, device=device,
        seed=cfg.train.seed,
    )
    assert isinstance(model, GraphRecommender)
    return model.to(device)


# ----------------------------------------------------------------------------- early stopping


class EarlyStopping(Callback):
    """Validate every ``recsys.eval_every`` epochs (and after the last step), keep the best
    weights in checkpoints/best.pt, stop after ``recsys.patience`` validations without
    improvement (not before ``recsys.min_epochs``). Its state is part of the run's checkpoint,
    written right after each validation: a kill between two validations never counts one twice."""

    def __init__(self, model: GraphRecommender, data: InteractionData, ctx: RunContext) -> None:
        self.model, self.data, self.ctx, self.cfg = model, data, ctx, ctx.cfg
        self.metric = ctx.cfg.recsys.valid_metric
        self.state: dict[str, Any] = {
            "best": -math.inf, "best_epoch": 0, "best_elapsed": 0.0, "bad": 0, "stopped": False,
            "valid_seconds": 0.0, "validations": 0,
        }

    def state_dict(self) -> dict[str, Any]:
        return dict(self.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state.update(state)

    def on_start(self, trainer: Trainer) -> None:
        self.log = CsvLogger(self.ctx.run_dir / VALID_LOG, trainer.step)  # rows after the checkpoint are redone
        if self.state["stopped"]:
            trainer.stop("early_stopping")

    def on_step(self, trainer: Trainer, logs: dict[str, float] | None) -> None:
        step, per_epoch = trainer.step, trainer.steps_per_epoch
        last = step >= trainer.total_steps
        if step % per_epoch != 0 and not last:
            return
        epoch = math.ceil(step / per_epoch)
        if epoch % self.cfg.recsys.eval_every != 0 and not last:
            return
        t0 = time.perf_counter()
        metrics = split_metrics(embedding_scorer(*self.model.embeddings()), self.data, self.cfg.recsys, "valid", self.ctx.device)
        seconds = time.perf_counter() - t0
        value = float(metrics[self.metric])
        st = self.state
        st["valid_seconds"] += seconds
        st["validations"] += 1
        if value > st["best"]:
            st.update(best=value, best_epoch=epoch, best_elapsed=trainer.elapsed, bad=0)
            atomic_save(
                {"model": self.model.state_dict(), "epoch": epoch, "metric": value, "step": step},
                self.ctx.run_dir / CHECKPOINTS / BEST_CHECKPOINT,
            )
        else:
            st["bad"] += 1
        self.log.log_metrics(step, {"epoch": epoch, "loss": trainer.last_loss(), **metrics, "seconds": seconds})
        if self.ctx.verbose and not self.cfg.train.progress:
            print(f"epoch {epoch}: valid {self.metric} {value:.4f} (best {st['best']:.4f} at {st['best_epoch']})", flush=True)
        if st["bad"] >= self.cfg.recsys.patience and epoch >= self.cfg.recsys.min_epochs:
            st["stopped"] = True
            trainer.stop("early_stopping")
        trainer.request_checkpoint()

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


# ----------------------------------------------------------------------------- the run


class RecsysRun(UserItemVectors, TrainedRun):
    """A recommender run: its split, and the user and item embeddings of its best epoch."""

    def interactions(self) -> InteractionData:
        """The run's split interactions (users' histories, item titles)."""
        return self.cached("split", lambda: saved_split(self.path))

    def best_model(self) -> GraphRecommender:
        """The recommender with the best-validation weights (the last checkpoint if none)."""
        model = build_model(self.config, self.interactions(), self.device)
        best = self.path / CHECKPOINTS / BEST_CHECKPOINT
        if best.is_file():
            state = load_checkpoint(best, map_location=self.device)["model"]
        else:
            state = load_run_weights(self.path, self.device)
        model.load_state_dict(state)
        return model.eval()

    def vectors(self) -> tuple[Tensor, Tensor]:
        """User (U, D) and item (I, D) embeddings of the best epoch (computed once if not saved)."""

        def best() -> tuple[Tensor, Tensor]:
            users, items = self.best_model().embeddings()
            return users.cpu(), items.cpu()

        return self.cached("vectors", lambda: cached_vectors(self.path, best))

    @property
    def user_vectors(self) -> Tensor:
        return self.vectors()[0]

    @property
    def item_vectors(self) -> Tensor:
        return self.vectors()[1]

    def evaluate(self, *, verbose: bool = True) -> dict[str, Any]:
        """Test (and validation) metrics of the best epoch and of the popularity baseline."""
        users, items = self.best_model().embeddings()
        save_vectors(self.path, users, items)
        return evaluate_recommender(self.config.method.name, embedding_scorer(users, items), self.interactions(),
                                    self.config.recsys, self.device, verbose=verbose, where=self.path)

    def results_table(self, ev: dict[str, Any]) -> str:
        return ranking_table(ev)

    def headline(self, results: dict[str, Any]) -> str:
        tr, es = results.get("train", {}), results.get("early_stopping", {})
        spe = es.get("seconds_per_epoch")
        return (
            f"trained {tr.get('steps')} steps ({number(tr.get('epochs_done'), '.1f')} epochs, "
            f"{'-' if spe is None else f'{spe:.2f}'} s/epoch) in {number(tr.get('seconds'), '.0f')}s; "
            f"stopped by {tr.get('stopped_by')}; best valid {es.get('metric')} "
            f"{fmt_metric(es.get('best'))} at epoch {es.get('best_epoch')}"
        )

    def compare_row(self, results: dict[str, Any]) -> dict[str, Any]:
        test = results.get("eval", {}).get("test", {}).get(self.config.method.name, {})
        return {key: test.get(key) for key in ("recall@20", "ndcg@20")}

    def similar(self, item: str, k: int = 10) -> list[dict[str, Any]]:
        """The k items whose embeddings are closest (cosine) to one of the data's own item ids."""
        return similar_items(self.interactions(), self.vectors()[1], item, k)

    def keyed_vectors(self) -> KeyedVectors:
        """Every item's embedding (of the best epoch) by item id (the vectors `similar` compares)."""
        return self.cached("keyed_vectors", lambda: KeyedVectors(self.interactions().item_ids, self.vectors()[1], what="item"))


# ----------------------------------------------------------------------------- the task


@register_task
class RecsysTask(Task):
    """Recommendation from implicit feedback, evaluated by full ranking on a held-out split."""

    name = "recsys"
    sections: ClassVar[dict[str, type | None]] = {"recsys": RecsysConfig}
    unread: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": ("channels_last", "sync_batchnorm"),
        "eval": ("baselines", "plots", "batch_size"),
    }
    default_method = "lightgcn"
    runs = (RecsysRun,)

    @classmethod
    def needs(cls, cfg: Config) -> tuple[str, str]:
        r = cfg.recsys
        return ("given split files (recsys.root)" if r.split == "given" else r.data), ""

    def training(self, ctx: RunContext) -> Training:
        from contrastkit.errors import UserError

        if ctx.world_size > 1:
            raise UserError("task recsys trains in one process (full-graph steps); run it without --nproc / torchrun")
        cfg = ctx.cfg
        data = self.data = run_split(ctx.run_dir, cfg.recsys, cfg.train.seed, resume=ctx.resume)
        model = build_model(cfg, data, ctx.device)
        loader = BPRLoader(data.train, data.n_items, batch_size=cfg.train.batch_size, seed=cfg.train.seed, device=ctx.device)
        self.stopper = EarlyStopping(model, data, ctx)
        return Training(GradientStep(model, cfg.optim, cfg.train, device=ctx.device), loader, unit="interactions",
                        callbacks=[self.stopper])

    def describe(self, ctx: RunContext) -> str:
        s, r = self.data.stats, ctx.cfg.recsys
        source = r.train_file if r.split == "given" else r.data
        return (
            f"training {ctx.cfg.method.name} on {source}: {s['users']} users, {s['items']} items, "
            f"{s['train']}/{s['valid']}/{s['test']} train/valid/test interactions ({r.split} split) on {ctx.device}"
        )

    def after_training(self, ctx: RunContext, summary: TrainSummary) -> dict[str, Any]:
        return {"early_stopping": self.stopper.results(summary)}
