"""Task ``text``: sentence embeddings (SimCSE, unsupervised or from pairs; CoSENT / AnglE from
scored pairs), evaluated on STS and retrieval before and after training (and at nested sizes:
``text.eval_dims`` or the method's ``matryoshka_dims``).

Run folder, besides the common files: ``text_encoder/`` (the text tower as a transformers
folder: config, tokenizer, weights once trained), ``text_run.json`` (what reloading needs),
``index/`` (nearest-neighbour indexes, see contrastkit.index). With a dev set
(``eval.dev_every``, ``text.dev_file``; see contrastkit.evaluate.text_dev): ``checkpoints/best.pt``
(the weights of the best dev step, which are the run's encoder: text_encoder/, evaluation,
export) and, for a held-out dev set, ``data/dev_pairs.jsonl``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from contrastkit.config import Config
from contrastkit.data.image.decode import is_image_file
from contrastkit.data.text.spec import TextConfig, TextEvalConfig, read_spec_texts
from contrastkit.encoders.text import (
    ENCODER_DIR,
    TextEncoder,
    initial_text_encoder,
    saved_text_encoder,
    text_encoder_for_training,
)
from contrastkit.errors import UserError
from contrastkit.evaluate.text import before_and_after, evaluate_text_encoder, text_compare_row, text_results_table
from contrastkit.index.vectors import write_embeddings
from contrastkit.methods.registry import get_method
from contrastkit.methods.scored_pairs import ScoredPairOptions
from contrastkit.runs import BEST, keep_best_weights, load_model_weights
from contrastkit.tasks.base import RunContext, Task, TrainedRun, ValidationSpec, register_task
from contrastkit.training import GradientStep, Training, TrainSummary

META_FILE = "text_run.json"
# keys of the text section only the image_text task reads
IMAGE_TEXT_KEYS = ("caption_templates", "zero_shot_templates")


def _text_augmentation(t: TextConfig, encoder: TextEncoder) -> Any:
    if not t.augment:
        return None
    from contrastkit.data.text.augment import EmbeddingNeighbours, build_text_augmentation

    return build_text_augmentation(
        t.augment, embedding_synonyms=lambda k: EmbeddingNeighbours(encoder.vocab(), encoder.word_embeddings(), k),
    )


def _build(cfg: Config, encoder: TextEncoder) -> nn.Module:
    pad = encoder.tokenizer.pad_token_id
    return get_method(cfg.method.name, "text").build(cfg.method, encoder=encoder, pad_token_id=int(pad) if pad is not None else 0)


# ----------------------------------------------------------------------------- the run


class TextRun(TrainedRun):
    """A sentence-embedding run: its text tower, before and after training."""

    def model(self) -> nn.Module:
        """The trained method (the text tower and its settings) from the last checkpoint, or from
        the best dev step's (checkpoints/best.pt) where the run has a dev set."""

        def build() -> nn.Module:
            model = _build(self.config, saved_text_encoder(self.config.text, self.path))
            model.load_state_dict(load_model_weights(self.path))  # a run with a dev set: its best step's
            return model.to(self.device).eval()

        return self.cached("model", build)

    def initial_model(self) -> nn.Module:
        """The model before training: the pretrained encoder it started from (or a random one)."""
        torch.manual_seed(self.config.train.seed + 4242)
        return _build(self.config, initial_text_encoder(self.config.text, self.path)).to(self.device).eval()

    def text_model(self) -> tuple[Any, nn.Module | None]:
        model: Any = self.model()
        return model.encoder, None

    @staticmethod
    @torch.no_grad()
    def _encode(model: nn.Module, texts: list[str], batch_size: int) -> Tensor:
        encoder: Any = model.encoder
        out: Tensor = encoder.encode(texts, batch_size=batch_size, device=next(model.parameters()).device)
        return out

    def encode_texts(self, texts: list[str], *, batch_size: int = 256) -> Tensor:
        """Sentence embeddings (N, D) on the CPU."""
        return self._encode(self.model(), texts, batch_size)

    def sample_texts(self) -> list[str]:
        from contrastkit.data.text.corpus import read_sentences

        t = self.config.text
        try:
            return read_sentences(t.train_file, t.train_columns, t.train_filter, data_root=t.data_root, limit=14)
        except (UserError, OSError, ValueError):
            return []

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, *, verbose: bool = True) -> dict[str, Any]:
        """STS and retrieval of the trained model and (``eval.baselines``) of the model before training."""
        batch = min(self.config.eval.batch_size, 256)

        dims = self.config.text.eval_dims or getattr(self.config.method, "matryoshka_dims", [])

        def evaluate(model: nn.Module) -> dict[str, Any]:
            return evaluate_text_encoder(lambda texts: self._encode(model, texts, batch), self.config.text, dims)

        initial = self.initial_model if self.config.eval.baselines else None
        return before_and_after(self.model, initial, evaluate, verbose=verbose)

    def results_table(self, ev: dict[str, Any]) -> str:
        return text_results_table(ev)

    def compare_row(self, results: dict[str, Any]) -> dict[str, Any]:
        return text_compare_row(results)

    def headline(self, results: dict[str, Any]) -> str:
        line = super().headline(results)
        val = results.get("validation")
        if not val or val.get("best") is None:
            return line
        return f"{line}; best {val['metric']} {val['best']:.4f} at step {val['best_step']} (the run's encoder)"

    # ------------------------------------------------------------------ hard negatives

    def mining_pairs(self, pairs: str | None = None) -> tuple[list[str], list[str]]:
        """(anchors, positives): of ``pairs`` (``FILE#ANCHOR,POSITIVE`` or ``sick:SPLIT``), else
        the run's training pairs (its columns and filter)."""
        from contrastkit.data.text.corpus import read_pairs
        from contrastkit.index.mining import read_pair_spec

        t = self.config.text
        if pairs is not None:
            return read_pair_spec(pairs, t.data_root)
        if self.config.method.name == "simcse" or not t.train_file:
            raise UserError(
                f"this run trained {self.config.method.name} on sentences, not pairs: name the pairs to mine for "
                "(--pairs FILE#ANCHOR,POSITIVE)"
            )
        columns = (t.train_columns or ["sentence_A", "sentence_B"])[:2]
        read = read_pairs(t.train_file, columns, t.train_filter, data_root=t.data_root, limit=t.max_train_examples)
        return read.anchors, read.positives

    def mine(
        self, corpus: str | None, out: str | Path, *, pairs: str | None = None, negatives: int = 1,
        margin: float | None = None, range_min: int = 0, range_max: int | None = None, k: int | None = None,
        sampling: str = "top", seed: int = 0, batch_size: int = 256,
    ) -> dict[str, Any]:
        """Hard negatives for the run's training pairs (or ``pairs``) from ``corpus`` (a text data
        spec; None: the pairs' positives), found with the run's encoder, written to ``out`` as
        (anchor, positive, negative) rows; returns what the filters did (see
        :mod:`contrastkit.index.mining`)."""
        from contrastkit.index.mining import check_mining, mine_to_file

        check_mining(out, negatives, margin, range_min, range_max, k, sampling, seed)
        return mine_to_file(
            lambda texts: self.encode_texts(texts, batch_size=batch_size), self.mining_pairs(pairs), corpus, out,
            data_root=self.config.text.data_root, negatives=negatives, margin=margin, range_min=range_min,
            range_max=range_max, k=k, sampling=sampling, seed=seed,
        )

    # ------------------------------------------------------------------ embeddings and search

    def embed_items(
        self, spec: str, *, batch_size: int = 256, unique: bool = False
    ) -> tuple[np.ndarray, list[dict[str, Any]], str]:
        """Embeddings of the texts of ``spec``, one description per row, and the modality;
        ``unique`` drops repeated texts (for an index)."""
        texts = read_spec_texts(spec, self.config.text, unique=unique)
        return self.encode_texts(texts, batch_size=batch_size).numpy(), [{"text": s} for s in texts], "text"

    def embed(self, spec: str | None, out: Path, *, batch_size: int = 512) -> tuple[int, int]:
        """Embeddings of SPEC → OUT (.npy); texts go to <stem>.texts.txt."""
        if spec is None:
            raise UserError("--data is required for this run: sick:SPLIT, a .txt file or FILE.csv#COLUMN")
        return write_embeddings(out, *self.embed_items(spec, batch_size=min(batch_size, 256))[:2])

    def query_modalities(self) -> tuple[str, ...]:
        return ("text",)

    def encode_query(self, query: str) -> tuple[np.ndarray, str]:
        """The embedding of a text query (modality "text")."""
        if is_image_file(query):
            raise UserError(f"this is a text run: query with text, not an image file ({query!r})")
        return self.encode_texts([query]).numpy(), "text"


# ----------------------------------------------------------------------------- the task


@register_task
class TextTask(Task):
    """Sentence embeddings trained contrastively, evaluated on STS and retrieval."""

    name = "text"
    sections: ClassVar[dict[str, type | None]] = {"text": TextConfig, "eval": TextEvalConfig}
    unread: ClassVar[dict[str, tuple[str, ...]]] = {
        "text": IMAGE_TEXT_KEYS,
        "train": ("channels_last", "sync_batchnorm"),
        "eval": ("plots",),
    }
    default_method = "simcse"
    runs = (TextRun,)
    held_out: Any = None  # the training pairs held out as the dev set (a dev set without text.dev_file)

    @classmethod
    def needs(cls, cfg: Config) -> tuple[str, str]:
        return cfg.text.train_file or "a text file (text.train_file)", "text"

    @classmethod
    def validate(cls, cfg: Config) -> None:
        t: TextConfig = cfg.text
        if not t.train_file:
            raise UserError("task text needs text.train_file (a .txt, .csv, .tsv, .jsonl file or sick:SPLIT)")
        if cfg.method.name == "simcse_supervised":
            if t.train_columns and len(t.train_columns) not in (2, 3):
                raise UserError(
                    f"simcse_supervised needs text.train_columns = [anchor, positive] or "
                    f"[anchor, positive, negative]; got {t.train_columns}"
                )
            if not t.train_columns and not t.train_file.startswith("sick:"):
                raise UserError("simcse_supervised needs text.train_columns = [anchor, positive(, negative)]")
        if isinstance(cfg.method, ScoredPairOptions):
            if (t.train_columns and len(t.train_columns) != 3) or (not t.train_columns and not t.train_file.startswith("sick:")):
                raise UserError(
                    f"{cfg.method.name} trains on scored pairs: text.train_columns = [sentence1, sentence2, score]; "
                    f"got {t.train_columns}"
                )
            if t.lazy:
                raise UserError(f"{cfg.method.name} reads scores, which text.lazy does not; set text.lazy=false")
        if t.lazy:
            from contrastkit.data.text.corpus import hf_source
            from contrastkit.data.text.lazy import lazy_format

            if hf_source(t.train_file) is not None:
                raise UserError(
                    f"text.lazy reads .txt and .jsonl files; {t.train_file!r} is a datasets source (read with "
                    "text.lazy=false)"
                )
            if t.batch_sampler == "no_duplicates":
                raise UserError("text.batch_sampler no_duplicates needs the texts in memory; set text.lazy=false")
            lazy_format(t.train_file)
        if cls.validates(cfg) and not t.dev_file:
            if cfg.method.name == "simcse":
                raise UserError("eval.dev_every on unsupervised simcse needs text.dev_file (sentences have no pairs to hold out)")
            if cfg.method.name != "simcse_supervised":  # held-out rows are (query, relevant document) pairs
                raise UserError(
                    f"eval.dev_every on {cfg.method.name} needs text.dev_file (training rows are held out as the dev set "
                    "for simcse_supervised's (anchor, positive) pairs only)"
                )
            if t.lazy:
                raise UserError("eval.dev_every with text.lazy needs text.dev_file (lazy training rows are not held out)")

    @classmethod
    def validates(cls, cfg: Config) -> bool:
        """Whether the run evaluates on a dev set during training (``eval.dev_every`` or ``text.dev_file``)."""
        return bool(cfg.eval.dev_every or cfg.text.dev_file)

    @classmethod
    def validation(cls, cfg: Config) -> ValidationSpec:
        """The dev set: ``dev_sts_spearman`` on an STS dev file, else ``dev_mrr@K`` on (query,
        document) dev pairs or on the pairs held out of training (higher is better), every
        ``eval.dev_every`` steps and after the last; the best step's weights become the run's
        encoder. Where the config has no dev set: SICK's trial split for a run on ``sick:``,
        else a slice of the training pairs, measured every 100 steps."""
        from contrastkit.evaluate.text_dev import DEV_DIRECTION, dev_metric

        if cls.validates(cfg):
            return ValidationSpec(dev_metric(cfg.text), DEV_DIRECTION, (), "eval.dev_every")
        sections = dict(cfg.sections)
        if str(cfg.text.train_file).startswith("sick:"):
            overrides, sections["text"] = ("text.dev_file=sick:trial",), replace(cfg.text, dev_file="sick:trial")
        else:
            overrides, sections["eval"] = ("eval.dev_every=100",), replace(cfg.eval, dev_every=100)
        checked = replace(cfg, sections=sections)
        cls.validate(checked)  # one line where no dev set can be held out (unsupervised simcse)
        return ValidationSpec(dev_metric(checked.text), DEV_DIRECTION, overrides, "eval.dev_every")

    def _dev_callback(self, ctx: RunContext, model: Any, held_out: Any) -> Any:
        """The dev-set validation of a run (None without one): every ``eval.dev_every`` steps and
        after the last, the best step's weights kept in checkpoints/best.pt."""
        from contrastkit.evaluate.text_dev import DEV_DIRECTION, HOLDOUT_FILE, DevSet, dev_metric, read_dev_set, write_holdout
        from contrastkit.training.callbacks import Validation

        cfg, t = ctx.cfg, ctx.cfg.text
        if not self.validates(cfg):
            return None
        if held_out is None:
            dev = read_dev_set(t)
        else:
            if ctx.is_main:
                write_holdout(held_out, ctx.run_dir)
            share = f"{t.dev_fraction:g} of the training anchors held out ({HOLDOUT_FILE})"
            dev = DevSet(held_out, dev_metric(t), share)
        batch = min(cfg.eval.batch_size, 256)

        def evaluate() -> float:  # encode() runs in eval mode, without gradients, and restores the mode
            return dev.evaluate(lambda texts: model.encoder.encode(texts, batch_size=batch, device=ctx.device), t.recall_k)

        return Validation(
            evaluate, metric=dev.metric, every=cfg.eval.dev_every or None, direction=DEV_DIRECTION,
            keep=keep_best_weights(model, ctx.run_dir, dev.metric),
            describe=dev.describe(), note=None if cfg.train.progress else ctx.log,
        )

    def _data(self, ctx: RunContext) -> Any:
        """Aligned text columns: [sentences] (unsupervised) or [anchors, positives(, negatives)];
        with ``text.lazy`` a LazyText indexed into the run's data/text_index/."""
        from contrastkit.data.text.corpus import read_pairs, read_sentences

        cfg, t = ctx.cfg, ctx.cfg.text
        self.scores: list[float] | None = None  # scored pairs' scores, one per row
        pairs = cfg.method.name != "simcse"
        if t.lazy:
            from contrastkit.data.text.lazy import open_lazy_text

            cache = ctx.run_dir / "data" / "text_index"
            if not ctx.is_main:  # under torchrun only rank 0 writes into the run folder
                cache = Path(tempfile.mkdtemp(prefix=f"contrastkit-rank{ctx.rank}-"))
            columns = t.train_columns or (["sentence_A", "sentence_B"] if pairs else [])
            return open_lazy_text(str(t.train_file), columns, t.train_filter, cache, pairs=pairs, limit=t.max_train_examples)
        if isinstance(cfg.method, ScoredPairOptions):  # (sentence1, sentence2, score)
            from contrastkit.data.text.corpus import read_sts

            sts = read_sts(t.train_file, t.train_columns, t.train_filter, data_root=t.data_root)
            n = t.max_train_examples or len(sts)
            self.scores = sts.scores[:n]
            return [sts.sentences1[:n], sts.sentences2[:n]]
        if not pairs:
            limit = t.max_train_examples
            return [read_sentences(t.train_file, t.train_columns, t.train_filter, data_root=t.data_root, limit=limit)]
        columns = t.train_columns or ["sentence_A", "sentence_B"]
        read = read_pairs(t.train_file, columns, t.train_filter, data_root=t.data_root, limit=t.max_train_examples)
        data = [read.anchors, read.positives, *([read.negatives] if read.negatives is not None else [])]
        if self.validates(cfg) and not t.dev_file:  # the dev set: a seeded slice of the anchors, out of training
            from contrastkit.evaluate.text_dev import hold_out

            data, self.held_out = hold_out(data, t.dev_fraction, cfg.train.seed)
        return data

    def training(self, ctx: RunContext) -> Training:
        from contrastkit.data.text.loader import TextViewLoader

        cfg, t = ctx.cfg, ctx.cfg.text
        data = self.data = self._data(ctx)
        corpus = data.iter_texts() if hasattr(data, "iter_texts") else [s for col in data for s in col]
        encoder = text_encoder_for_training(t, ctx.run_dir, corpus, resume=ctx.resume, rank=ctx.rank)
        model = self.model = _build(cfg, encoder)
        loader = TextViewLoader(
            data, encoder.tokenize, batch_size=ctx.local_batch, views=2, augmentation=_text_augmentation(t, encoder),
            seed=cfg.train.seed, device=ctx.device, rank=ctx.rank, world_size=ctx.world_size, workers=t.workers,
            scores=self.scores, batch_sampler=t.batch_sampler,
        )
        if not ctx.resume and ctx.is_main:  # before training: an interrupted run can be evaluated
            (ctx.run_dir / META_FILE).write_text(json.dumps({"task": self.name}, indent=2))
        self.dev = self._dev_callback(ctx, model, self.held_out)
        return Training(GradientStep(model, cfg.optim, cfg.train, device=ctx.device, note=ctx.log), loader, unit="texts",
                        callbacks=[self.dev] if self.dev is not None else [])

    def describe(self, ctx: RunContext) -> str:
        data = self.data
        n, k = (len(data), data.n_columns) if hasattr(data, "take") else (len(data[0]), len(data))
        what = f"{n} {'sentences' if k == 1 else 'scored pairs' if getattr(self, 'scores', None) is not None else 'pairs'}"
        return f"training {ctx.cfg.method.name} on {what} with text encoder {ctx.cfg.text.encoder} on {ctx.device}"

    def after_training(self, ctx: RunContext, summary: TrainSummary) -> dict[str, Any]:
        """The run's encoder (the best dev step's, with a dev set) into text_encoder/; results.json's
        ``validation``: the dev metric, its direction, curve and best step (a run stopped before
        its last step, by its time budget, is validated at its final step too)."""
        if not ctx.is_main:
            return {}
        model: Any = self.model
        if self.dev is not None:
            self.dev.finish(summary.steps)
        if self.dev is not None and (ctx.run_dir / BEST).is_file():  # none where every dev figure was NaN
            model.load_state_dict(load_model_weights(ctx.run_dir, ctx.device))
        model.encoder.save(ctx.run_dir / ENCODER_DIR)
        return {"validation": self.dev.results()} if self.dev is not None else {}
