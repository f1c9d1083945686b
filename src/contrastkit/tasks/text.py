"""Task ``text``: sentence embeddings (SimCSE, unsupervised or from pairs), evaluated on STS
and retrieval before and after training; shared by the image–text task (image_text.py).

Run folder, besides the common files: ``text_encoder/`` (the text tower as a transformers
folder: config, tokenizer, weights once trained), ``text_run.json`` (what reloading needs),
``index/`` (nearest-neighbour indexes, see contrastkit.index).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import Tensor, nn

from contrastkit.config import Config
from contrastkit.errors import UserError
from contrastkit.options import lazy_choices, option
from contrastkit.runs import load_run_checkpoint
from contrastkit.tasks.base import RunContext, Task, for_queries, register_task
from contrastkit.train import TrainSummary

ENCODER_DIR = "text_encoder"
META_FILE = "text_run.json"
TEXT_SUFFIXES: tuple[str, ...] = (".txt", ".csv", ".tsv", ".tab", ".jsonl", ".json", ".ndjson")
TRAINED, INITIAL = "trained", "initial"


@dataclass
class TextConfig:
    """Text data, the text encoder and text evaluation (tasks text and image_text)."""

    train_file: str | None = option(None, "training data: sick:SPLIT, a .txt (one per line), .csv/.tsv/.jsonl")
    train_columns: list[str] = option(help="sentences; or anchor, positive[, negative]; or image, caption", factory=list)
    train_filter: dict[str, Any] | None = option(None, "keep rows whose columns equal these values")
    max_train_examples: int | None = option(None, "use at most this many training rows", ge=1)
    lazy: bool = option(
        False,
        "read training rows from the file on demand (a .txt or .jsonl, optionally .gz) through a "
        "line-offset index in the run's data/text_index/ (8 bytes a row; .gz decompressed there "
        "once) instead of into memory; off: read eagerly (small files)",
    )
    workers: int = option(0, "DataLoader worker processes that read and tokenise batches (0: in-process)", ge=0)
    sts_file: str | None = option(None, "STS evaluation: two sentences and a score")
    sts_columns: list[str] = option(
        help="sentence1, sentence2, score", factory=lambda: ["sentence_A", "sentence_B", "relatedness_score"]
    )
    sts_filter: dict[str, Any] | None = option(None, "keep STS rows whose columns equal these values")
    retrieval_file: str | None = option(None, "retrieval evaluation: (query, relevant document) pairs")
    retrieval_columns: list[str] = option(help="query, document", factory=list)
    retrieval_filter: dict[str, Any] | None = option(None, "keep retrieval rows whose columns equal these values")
    data_root: str | None = option(None, "where named sources (sick) are looked for first")
    encoder: str = option("minilm", "minilm | tiny | a local folder | a hub name")
    pooling: str = option("mean", "token pooling of the sentence encoder", choices=lazy_choices("contrastkit.encoders.text", "TEXT_POOLINGS"))
    max_length: int = option(64, "tokens per text", ge=2)
    dropout: float | None = option(None, "override the encoder's dropout (SimCSE's noise)", ge=0, lt=1)
    tiny_width: int = option(64, "tiny encoder: hidden width", ge=1)
    tiny_layers: int = option(2, "tiny encoder: layers", ge=1)
    tiny_vocab_size: int = option(8000, "tiny encoder: vocabulary built from the data", ge=16)
    augment: list[dict[str, Any]] | None = option(None, "discrete text views, e.g. [{name: word_deletion, p: 0.1}]")
    caption_templates: list[str] = option(
        help="image_text: captions from labels",
        factory=lambda: ["a photo of a {label}", "a {tone} {label}", "a {size} {tone} {label}"],
    )
    zero_shot_templates: list[str] = option(help="image_text: zero-shot prompts", factory=lambda: ["a photo of a {label}"])
    recall_k: list[int] = option(help="K of the retrieval metrics", factory=lambda: [1, 5, 10], ge=1)

    def check_values(self, prefix: str) -> None:
        from contrastkit.errors import check_choice

        if not self.recall_k:
            raise UserError(f"{prefix}.recall_k must list positive integers, got {self.recall_k}")
        for item in self.augment or []:
            if not isinstance(item, dict) or "name" not in item:
                raise UserError(f"each {prefix}.augment entry must be a mapping with a name, got {item!r}")
            check_choice("text augmentation", str(item["name"]), lazy_choices("contrastkit.data.text.augment", "AUGMENTATIONS")())
        if self.sts_file and len(self.sts_columns) != 3:
            raise UserError(f"{prefix}.sts_columns must be [sentence1, sentence2, score], got {self.sts_columns}")
        if self.retrieval_file and self.retrieval_columns and len(self.retrieval_columns) != 2:
            raise UserError(f"{prefix}.retrieval_columns must be [query, document], got {self.retrieval_columns}")


# ----------------------------------------------------------------------------- data specs


def split_columns(spec: str) -> tuple[str, list[str]]:
    """'file.csv#col1,col2' → ('file.csv', ['col1', 'col2'])."""
    path, sep, cols = spec.partition("#")
    return (path, [c for c in cols.split(",") if c]) if sep else (spec, [])


def is_text_spec(spec: str) -> bool:
    """Whether a data spec names text (a text/table file or sick:SPLIT) rather than images."""
    path, _ = split_columns(spec)
    return path.startswith("sick:") or (Path(path).suffix.lower() in TEXT_SUFFIXES and Path(path).is_file())


def read_spec_texts(spec: str, cfg: Config) -> list[str]:
    """Texts of a data spec for embedding or indexing, in file order (duplicates kept)."""
    from contrastkit.data.text.corpus import read_sentences

    path, cols = split_columns(spec)
    return read_sentences(path, cols, None, data_root=cfg.text.data_root, unique=False)


def read_meta(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / META_FILE
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} is not a finished text run (no {META_FILE}); train it first")
    meta: dict[str, Any] = json.loads(path.read_text())
    return meta


# ----------------------------------------------------------------------------- the text encoder


def text_encoder_for_training(ctx: RunContext, corpus: Iterable[str]) -> Any:
    """The text tower of a new run (built from the config, its files saved in the run folder so
    a resumed run rebuilds the same tokenizer), or of the run being resumed."""
    from contrastkit.encoders.text import build_text_encoder, load_pretrained_text_encoder

    t: TextConfig = ctx.cfg.text
    folder = ctx.run_dir / ENCODER_DIR
    if not ctx.is_main:  # under torchrun only rank 0 writes into the run folder
        folder = Path(tempfile.mkdtemp(prefix=f"contrastkit-rank{ctx.rank}-"))
    if ctx.resume and (folder / "config.json").is_file():
        return load_pretrained_text_encoder(folder, pooling=t.pooling, max_length=t.max_length, weights=False)
    encoder = build_text_encoder(
        t.encoder, pooling=t.pooling, max_length=t.max_length, dropout=t.dropout, corpus=corpus,
        tiny_width=t.tiny_width, tiny_layers=t.tiny_layers, tiny_vocab_size=t.tiny_vocab_size, folder=folder,
    )
    encoder.save(folder, weights=False)  # config + tokenizer now: a resumed run rebuilds from them
    return encoder


def saved_text_encoder(run_dir: Path, cfg: Config) -> Any:
    """The run's text tower rebuilt from its folder (weights come from the checkpoint)."""
    from contrastkit.encoders.text import load_pretrained_text_encoder

    folder = Path(run_dir) / ENCODER_DIR
    if not (folder / "config.json").is_file():
        raise UserError(f"{str(run_dir)!r} has no {ENCODER_DIR}/ folder; was it trained?")
    return load_pretrained_text_encoder(folder, pooling=cfg.text.pooling, max_length=cfg.text.max_length, weights=False)


# ----------------------------------------------------------------------------- the task


@register_task
class TextTask(Task):
    """Sentence embeddings trained contrastively, evaluated on STS and retrieval."""

    name = "text"
    sections: ClassVar[dict[str, type]] = {"text": TextConfig}
    default_method = "simcse"
    unit = "texts"
    query_modalities: ClassVar[tuple[str, ...]] = ("text",)

    def validate(self, cfg: Config) -> None:
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
        if t.lazy:
            from contrastkit.data.text.lazy import lazy_format

            lazy_format(t.train_file)

    # ------------------------------------------------------------------ training

    def data(self, ctx: RunContext) -> Any:
        """Aligned text columns: [sentences] (unsupervised) or [anchors, positives(, negatives)]."""
        from contrastkit.data.text.corpus import read_pairs, read_sentences

        cfg, t = ctx.cfg, ctx.cfg.text
        if t.lazy:
            return self.lazy_data(ctx)
        if cfg.method.name == "simcse":
            return [read_sentences(t.train_file, t.train_columns, t.train_filter, data_root=t.data_root, limit=t.max_train_examples)]
        columns = t.train_columns or ["sentence_A", "sentence_B"]
        pairs = read_pairs(t.train_file, columns, t.train_filter, data_root=t.data_root, limit=t.max_train_examples)
        return [pairs.anchors, pairs.positives, *([pairs.negatives] if pairs.negatives is not None else [])]

    def lazy_data(self, ctx: RunContext) -> Any:
        """The training rows as a LazyText, indexed into the run's data/text_index/."""
        from contrastkit.data.text.lazy import open_lazy_text

        cfg, t = ctx.cfg, ctx.cfg.text
        cache = ctx.run_dir / "data" / "text_index"
        if not ctx.is_main:  # under torchrun only rank 0 writes into the run folder
            cache = Path(tempfile.mkdtemp(prefix=f"contrastkit-rank{ctx.rank}-"))
        pairs = cfg.method.name != "simcse"
        columns = t.train_columns or (["sentence_A", "sentence_B"] if pairs else [])
        return open_lazy_text(str(t.train_file), columns, t.train_filter, cache, pairs=pairs, limit=t.max_train_examples)

    def model(self, ctx: RunContext, data: Any) -> nn.Module:
        corpus = data.iter_texts() if hasattr(data, "iter_texts") else [s for col in data for s in col]
        encoder = text_encoder_for_training(ctx, corpus)
        return self.build_method(ctx.cfg, encoder)

    def build_method(self, cfg: Config, text_encoder: Any, image_encoder: nn.Module | None = None) -> nn.Module:
        from contrastkit.methods.registry import get_method

        pad = text_encoder.tokenizer.pad_token_id
        return get_method(cfg.method.name, self.name).build(
            cfg.method, encoder=text_encoder, pad_token_id=int(pad) if pad is not None else 0
        )

    def loader(self, ctx: RunContext, data: Any, model: nn.Module) -> Any:
        from contrastkit.data.text.loader import TextViewLoader

        encoder = cast(Any, model).encoder
        loader = TextViewLoader(
            data, encoder.tokenize, batch_size=ctx.local_batch, views=2,
            augmentation=_text_augmentation(ctx.cfg, encoder), seed=ctx.cfg.train.seed, device=ctx.device,
            rank=ctx.rank, world_size=ctx.world_size, workers=ctx.cfg.text.workers,
        )
        self.write_meta(ctx, data)
        return loader

    def write_meta(self, ctx: RunContext, data: Any) -> None:
        """text_run.json of a new run (before training: an interrupted run can be evaluated)."""
        if not ctx.resume and ctx.is_main:
            (ctx.run_dir / META_FILE).write_text(json.dumps(self.meta(ctx, data), indent=2))

    def describe(self, ctx: RunContext, data: Any) -> str:
        n, k = (len(data), data.n_columns) if hasattr(data, "take") else (len(data[0]), len(data))
        what = f"{n} {'sentences' if k == 1 else 'pairs'}"
        return f"training {ctx.cfg.method.name} on {what} with text encoder {ctx.cfg.text.encoder} on {ctx.device}"

    def meta(self, ctx: RunContext, data: Any) -> dict[str, Any]:
        """What reloading the run needs besides config.yaml (text_run.json)."""
        return {"task": self.name}

    def after_training(self, ctx: RunContext, data: Any, model: nn.Module, summary: TrainSummary) -> dict[str, Any]:
        if ctx.is_main:
            self.text_tower(model).save(ctx.run_dir / ENCODER_DIR)
        return {}

    def text_tower(self, model: nn.Module) -> Any:
        return cast(Any, model).encoder

    # ------------------------------------------------------------------ reload

    def trained_model(self, run_dir: Path, cfg: Config, device: torch.device) -> nn.Module:
        """The run's model with its last checkpoint."""
        model = self.build_method(cfg, saved_text_encoder(run_dir, cfg), self.image_tower(run_dir, cfg))
        model.load_state_dict(load_run_checkpoint(run_dir)["model"])
        return model.to(device).eval()

    def initial_model(self, run_dir: Path, cfg: Config, device: torch.device) -> nn.Module:
        """The model before training: the pretrained text encoder (or a random one), random image tower."""
        from contrastkit.encoders.text import build_text_encoder

        torch.manual_seed(cfg.train.seed + 4242)
        t: TextConfig = cfg.text
        if t.encoder == "tiny":
            text_encoder = saved_text_encoder(run_dir, cfg)
        else:
            text_encoder = build_text_encoder(t.encoder, pooling=t.pooling, max_length=t.max_length)
        return self.build_method(cfg, text_encoder, self.image_tower(run_dir, cfg)).to(device).eval()

    def image_tower(self, run_dir: Path, cfg: Config) -> nn.Module | None:
        return None

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def encode_texts(self, model: nn.Module, texts: list[str], *, batch_size: int = 256) -> Tensor:
        """Sentence embeddings (N, D) on the CPU."""
        m = cast(Any, model)
        out: Tensor = m.encoder.encode(texts, batch_size=batch_size, device=next(model.parameters()).device)
        return out

    def evaluate(self, run_dir: Path, cfg: Config, *, verbose: bool = True) -> dict[str, Any]:
        """The evaluation of the trained model and, with eval.baselines, of the model before
        training."""
        from contrastkit.tasks.runner import setup_runtime

        device = setup_runtime(cfg, distributed=False)
        t0 = time.perf_counter()
        batch = min(cfg.eval.batch_size, 256)
        meta = read_meta(run_dir)
        results: dict[str, Any] = {"encoders": {}}
        candidates = [(TRAINED, self.trained_model)]
        if cfg.eval.baselines:
            candidates.append((INITIAL, self.initial_model))
        for name, make in candidates:
            t1 = time.perf_counter()
            res = self.evaluate_model(make(run_dir, cfg, device), cfg, meta, batch)
            res["seconds"] = time.perf_counter() - t1
            results["encoders"][name] = res
            if verbose:
                print(f"  evaluated {name} in {res['seconds']:.1f}s", flush=True)
        results["seconds"] = time.perf_counter() - t0
        return results

    def evaluate_model(self, model: nn.Module, cfg: Config, meta: dict[str, Any], batch_size: int) -> dict[str, Any]:
        """STS (Spearman / Pearson of cosine) and retrieval @ K of one model."""
        from contrastkit.data.text.corpus import read_pairs, read_sts
        from contrastkit.evaluate.retrieval import retrieval_metrics
        from contrastkit.evaluate.sts import evaluate_sts

        t: TextConfig = cfg.text
        out: dict[str, Any] = {}

        def enc(texts: list[str]) -> Tensor:
            return self.encode_texts(model, texts, batch_size=batch_size)

        if t.sts_file:
            sts = read_sts(t.sts_file, t.sts_columns, t.sts_filter, data_root=t.data_root)
            out["sts"] = evaluate_sts(enc, sts.sentences1, sts.sentences2, sts.scores)
        if t.retrieval_file:
            cols = t.retrieval_columns or ["sentence_A", "sentence_B"]
            pairs = read_pairs(t.retrieval_file, cols, t.retrieval_filter, data_root=t.data_root)
            docs = list(dict.fromkeys(pairs.positives))
            where = {d: i for i, d in enumerate(docs)}
            relevant: dict[str, set[int]] = {}
            for q, d in zip(pairs.anchors, pairs.positives, strict=True):
                relevant.setdefault(q, set()).add(where[d])
            queries = list(relevant)
            out["retrieval"] = retrieval_metrics(enc(queries), enc(docs), [sorted(relevant[q]) for q in queries], ks=t.recall_k)
            out["retrieval"]["corpus"] = len(docs)
        return out

    def results_table(self, ev: dict[str, Any]) -> str:
        """One row per encoder (trained / initial), values × 100."""
        from contrastkit.evaluate.tables import format_table, pct

        enc = ev.get("encoders", {})
        if not enc:
            return "(nothing evaluated)"
        cols: list[tuple[str, str, str]] = []
        first = next(iter(enc.values()))
        if "sts" in first:
            cols += [("STS spearman", "sts", "spearman"), ("STS pearson", "sts", "pearson")]
        if "zero_shot" in first:
            cols.append(("zero-shot acc", "zero_shot", "accuracy"))
        for section, label in (("retrieval", ""), ("image_to_text", "i→t "), ("text_to_image", "t→i ")):
            if section in first:
                ks = sorted(int(k.split("@")[1]) for k in first[section] if k.startswith("hit@"))
                cols += [(f"{label}R@{k}", section, f"hit@{k}") for k in ks]
                if ks:
                    cols += [(f"{label}MRR@{ks[-1]}", section, f"mrr@{ks[-1]}"), (f"{label}nDCG@{ks[-1]}", section, f"ndcg@{ks[-1]}")]
        rows = [[name] + [pct(r.get(sec, {}).get(key)) for _, sec, key in cols] for name, r in enc.items()]
        title = "evaluation (×100; R@K = share of queries with a relevant item in the top K):\n"
        return title + format_table(["encoder", *(c[0] for c in cols)], rows)

    # ------------------------------------------------------------------ embeddings and search

    def embed_items(
        self, run_dir: Path, cfg: Config, spec: str, *, batch_size: int = 256, unique: bool = False
    ) -> tuple[np.ndarray, list[dict[str, Any]], str]:
        """Embeddings of the texts of ``spec``, one description per row, and the modality;
        ``unique`` drops repeated texts (for an index)."""
        from contrastkit.tasks.runner import setup_runtime

        model = self.trained_model(run_dir, cfg, setup_runtime(cfg, distributed=False))
        texts = read_spec_texts(spec, cfg)
        if unique:
            texts = list(dict.fromkeys(texts))
        z = self.encode_texts(model, texts, batch_size=batch_size)
        return z.numpy(), [{"text": s} for s in texts], "text"

    def embed(self, run_dir: Path, cfg: Config, spec: str | None, out: Path, *, batch_size: int) -> tuple[int, int]:
        """Embeddings of SPEC → OUT (.npy); texts go to <stem>.texts.txt."""
        if spec is None:
            raise UserError("--data is required for this run: sick:SPLIT, a .txt file or FILE.csv#COLUMN")
        vectors, items, modality = self.embed_items(run_dir, cfg, spec, batch_size=min(batch_size, 256))
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, vectors.astype(np.float32))
        if modality == "text":
            out.with_name(out.stem + ".texts.txt").write_text("\n".join(i["text"].replace("\n", " ") for i in items) + "\n")
        return int(vectors.shape[0]), int(vectors.shape[1])

    def encode_query(self, run_dir: Path, cfg: Config, query: str) -> tuple[np.ndarray, str]:
        """The embedding of a text query (modality "text")."""
        from contrastkit.index.search import is_image_query
        from contrastkit.tasks.runner import setup_runtime

        if is_image_query(query):
            raise UserError(f"this is a text run: query with text, not an image file ({query!r})")
        model = for_queries(run_dir, "trained", lambda: self.trained_model(run_dir, cfg, setup_runtime(cfg, distributed=False)))
        return self.encode_texts(model, [query]).numpy(), "text"


def _text_augmentation(cfg: Config, encoder: Any) -> Any:
    if not cfg.text.augment:
        return None
    from contrastkit.data.text.augment import EmbeddingNeighbours, build_text_augmentation

    return build_text_augmentation(
        cfg.text.augment,
        embedding_synonyms=lambda k: EmbeddingNeighbours(encoder.vocab(), encoder.word_embeddings(), k),
    )
