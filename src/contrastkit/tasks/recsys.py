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
from contrastkit.data.interactions.spec import RecsysConfig, run_split, saved_split, valid_metric_name
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
from contrastkit.runs import keep_best_weights, load_model_weights
from contrastkit.tasks.base import RunContext, Task, TrainedRun, ValidationSpec, number, register_task
from contrastkit.training import (
    Callback,
    GradientStep,
    Trainer,
    Training,
    TrainSummary,
)
from contrastkit.training.callbacks import Validation
from contrastkit.training.loggers import CsvLogger

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


# ----------------------------------------------------------------------------- validation


class ValidationLog(Callback):
    """What the one :class:`Validation` of a recsys run leaves to the task: validation_log.csv
    (every metric of each validation, a row each, written by rank 0 from inside the evaluation;
    rows past the checkpoint a resumed run starts from are dropped, so none is written twice) and
    the training time at the best validation (its state, saved with the checkpoint). Placed
    before the Validation: it holds the trainer the evaluation reads its step and loss from."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.trainer: Trainer | None = None
        self.log: CsvLogger | None = None
        self.best_elapsed = 0.0

    def on_start(self, trainer: Trainer) -> None:
        self.trainer = trainer
        if trainer.is_main:
            self.log = CsvLogger(self.ctx.run_dir / VALID_LOG, trainer.step)

    def write(self, metrics: dict[str, float], seconds: float) -> None:
        trainer = self.trainer
        assert trainer is not None
        step, per_epoch = trainer.step, trainer.steps_per_epoch
        if self.log is not None:
            self.log.log_metrics(step, {"epoch": math.ceil(step / per_epoch), "loss": trainer.last_loss(), **metrics,
                                        "seconds": seconds})

    def state_dict(self) -> dict[str, Any]:
        return {"best_elapsed": self.best_elapsed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_elapsed = float(state.get("best_elapsed", 0.0))  # an older run's EarlyStopping state has it too


def recsys_validation(model: GraphRecommender, data: InteractionData, ctx: RunContext,
                      steps_per_epoch: int) -> tuple[ValidationLog, Validation]:
    """The run's validation on the valid split (train items masked): ``recsys.valid_metric``
    every ``recsys.eval_every`` epochs and after the last step, the best weights in
    checkpoints/best.pt, training stopped after ``recsys.patience`` validations without a new
    best (not before epoch ``recsys.min_epochs``)."""
    cfg, r = ctx.cfg, ctx.cfg.recsys
    log = ValidationLog(ctx)

    def evaluate() -> float:
        t0 = time.perf_counter()
        metrics = split_metrics(embedding_scorer(*model.embeddings()), data, r, "valid", ctx.device)
        log.write(metrics, time.perf_counter() - t0)
        return float(metrics[r.valid_metric])

    def note(line: str) -> None:  # "epoch E, step S: val_ndcg@20 ..."
        assert log.trainer is not None
        ctx.log(f"epoch {math.ceil(log.trainer.step / steps_per_epoch)}, {line}")

    save = keep_best_weights(model, ctx.run_dir, valid_metric_name(r))

    def keep(step: int, value: float) -> None:
        assert log.trainer is not None
        log.best_elapsed = log.trainer.elapsed
        save(step, value)

    validation = Validation(
        evaluate, metric=valid_metric_name(r), every=r.eval_every * steps_per_epoch, direction="max", keep=keep,
        describe={"split": "valid", "eval_every_epochs": r.eval_every, "patience": r.patience,
                  "min_epochs": r.min_epochs},
        note=None if cfg.train.progress else note, patience=r.patience, min_step=r.min_epochs * steps_per_epoch,
    )
    return log, validation


def early_stopping_entry(validation: Validation, log: ValidationLog, summary: TrainSummary, r: RecsysConfig,
                         steps_per_epoch: int, during: float) -> dict[str, Any]:
    """results.json's ``early_stopping`` (what the run's headline and the benchmark tables read),
    from the Validation: the best validation and its epoch, the training time to it, whether
    patience stopped the run, and the training time without the ``during`` seconds of
    validations inside the run's time."""
    train_seconds = max(summary.seconds - during, 0.0)
    best_step = validation.best_step
    return {
        "metric": r.valid_metric,
        "best": validation.best,
        "best_epoch": 0 if best_step is None else math.ceil(best_step / steps_per_epoch),
        "seconds_to_best": log.best_elapsed,
        "stopped_early": validation.stopped,
        "validations": len(validation.curve),
        "validation_seconds": validation.seconds,
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
        model.load_state_dict(load_model_weights(self.path, self.device))
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
        self.steps_per_epoch = len(loader)
        self.valid_log, self.validator = recsys_validation(model, data, ctx, self.steps_per_epoch)
        return Training(GradientStep(model, cfg.optim, cfg.train, device=ctx.device), loader, unit="interactions",
                        callbacks=[self.valid_log, self.validator])

    def describe(self, ctx: RunContext) -> str:
        s, r = self.data.stats, ctx.cfg.recsys
        source = r.train_file if r.split == "given" else r.data
        return (
            f"training {ctx.cfg.method.name} on {source}: {s['users']} users, {s['items']} items, "
            f"{s['train']}/{s['valid']}/{s['test']} train/valid/test interactions ({r.split} split) on {ctx.device}"
        )

    @classmethod
    def validation(cls, cfg: Config) -> ValidationSpec:
        """``val_`` + ``recsys.valid_metric`` on the valid split, higher is better, every
        ``recsys.eval_every`` epochs."""
        return ValidationSpec(valid_metric_name(cfg.recsys), "max", (), "recsys.eval_every")

    def after_training(self, ctx: RunContext, summary: TrainSummary) -> dict[str, Any]:
        """results.json's ``validation`` (the one shape of every task; a run stopped between two
        validations, by its time budget, is validated at its final step too) and
        ``early_stopping`` (derived from it)."""
        val = self.validator
        during = val.seconds  # the validations inside the run's time
        val.finish(summary.steps)
        es = early_stopping_entry(val, self.valid_log, summary, ctx.cfg.recsys, self.steps_per_epoch, during)
        return {"validation": val.results(), "early_stopping": es}
