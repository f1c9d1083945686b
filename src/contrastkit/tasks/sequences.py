"""Task ``sequences``: token sequences in, token embeddings out — word2vec on a text corpus, or
item2vec on users' interaction histories (skip-gram with negative sampling or NCE).

Text: the corpus is tokenised, tokens seen fewer than ``min_count`` times dropped, and the vectors
are evaluated on word pairs with human similarity scores (Spearman of cosine, e.g. WordSim-353)
and shown by their nearest neighbours. Interactions: the recsys section reads and splits the data
exactly as for the graph recommenders, each user's training items (in time order, or as a set)
form a sentence, a user's vector is the mean of their items' normalised vectors, and the test is
the same full ranking against popularity; ``contrastkit recommend`` / ``similar`` / ``embed`` work
on the run as on a recsys run.

Run folder, besides the common files: data/ (the corpus, or the interaction split), vectors.npz
(tokens and their vectors), and for interactions embeddings.safetensors (user and item vectors).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from contrastkit.config import Config, EvalConfig
from contrastkit.data.interactions import InteractionData
from contrastkit.data.interactions.spec import DATA_DIR, RecsysConfig, run_split, saved_split, valid_metric_name
from contrastkit.data.sequences import (
    TOKENIZERS,
    SkipGramBlocks,
    SkipGramLoader,
    TokenCorpus,
    corpus_from_histories,
    corpus_from_sentences,
    text_sentences,
)
from contrastkit.errors import UserError
from contrastkit.evaluate.ranking import embedding_scorer
from contrastkit.evaluate.recommendation import evaluate_recommender, ranking_table, split_metrics
from contrastkit.evaluate.tables import pct
from contrastkit.index.keyed import KeyedVectors
from contrastkit.index.vectors import (
    UserItemVectors,
    cached_vectors,
    nearest,
    save_vectors,
)
from contrastkit.methods.base import StepOutput
from contrastkit.methods.registry import get_method
from contrastkit.methods.skipgram import kernel_available
from contrastkit.options import option
from contrastkit.runs import load_run_weights
from contrastkit.tasks.base import RunContext, Task, TrainedRun, ValidationSpec, register_task
from contrastkit.training import (
    Clock,
    GradientStep,
    OptimConfig,
    TrainConfig,
    Training,
    autocast_dtype,
    peak_lr,
)
from contrastkit.training.callbacks import Validation

SOURCES: tuple[str, ...] = ("text", "interactions")
ORDERS: tuple[str, ...] = ("time", "set")
VECTORS_FILE = "vectors.npz"


@dataclass
class SequencesConfig:
    """Where the sequences come from and how they are read and evaluated."""

    source: str = option("text", "text: a corpus; interactions: users' histories (read by the recsys section)", choices=SOURCES)
    text_file: str | None = option(
        None, "text: a .txt(.gz) file (a sentence or document per line), sick:SPLIT or FILE.csv#column")
    tokenizer: str = option("words", "words (letters, digits, apostrophes) or whitespace (already tokenised)", choices=TOKENIZERS)
    lowercase: bool = option(True, "text: lowercase before tokenising")
    min_count: int = option(5, "drop tokens seen fewer times (text)", ge=1)
    max_vocab: int | None = option(None, "keep the most frequent tokens only", ge=1)
    order: str = option("time", "interactions: each history in time order, or as a set (reshuffled every epoch)", choices=ORDERS)
    similarity_file: str | None = option(None, "text: word pairs with a similarity score (word1, word2, score; e.g. WordSim-353)")
    neighbours: list[str] = option(help="tokens whose nearest neighbours the results list", factory=list)
    data_root: str | None = option(
        None,
        "the folder holding SICK.txt (or its sick/), searched first; then $CONTRASTKIT_DATA/sick, "
        "~/.cache/contrastkit/sick, ../shared/data/sick",
    )


@dataclass
class SequencesEvalConfig(EvalConfig):
    """Evaluation after training, and of item2vec during it on the validation split."""

    valid_every: int = option(
        0, "interactions: val_ + recsys.valid_metric on the valid split every N steps of training (0: after the "
        "last step only; text corpora have no validation split)", ge=0)


NO_TEXT_VALIDATION = ("word2vec on a text corpus has no validation split (its word-similarity and analogy data "
                      "are its test); item2vec (sequences.source=interactions) validates on the valid split")


def read_word_pairs(path: str) -> tuple[list[str], list[str], list[float]]:
    """(word1, word2, score) rows of a tab- or space-separated file; '#' lines and a header skipped."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"sequences.similarity_file {path!r} does not exist")
    first: list[str] = []
    second: list[str] = []
    scores: list[float] = []
    for number, line in enumerate(file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        try:
            score = float(parts[2])
        except (IndexError, ValueError):
            if not scores and not first:
                continue  # a header line
            raise UserError(f"{path}:{number}: expected word1, word2 and a score; got {line.strip()!r}") from None
        first.append(parts[0].strip())
        second.append(parts[1].strip())
        scores.append(score)
    if not scores:
        raise UserError(f"sequences.similarity_file {path!r} holds no (word1, word2, score) rows")
    return first, second, scores


def history_scorer(inputs: Tensor, outputs: Tensor, train: np.ndarray, n_users: int) -> tuple[Tensor, Tensor]:
    """User and item embeddings whose dot product is skip-gram's own prediction of item j next to
    a user's history H: the mean over i in H of log P(j | i) = in_i · out_j + log P(j) (SGNS
    learns in_i · out_j ≈ PMI(i, j) − log k; Levy & Goldberg 2014). Users: [mean of their items'
    input vectors, 1]; items: [output vector, log of the item's training frequency]."""
    pairs = torch.as_tensor(train, dtype=torch.long)
    users = torch.zeros(n_users, inputs.shape[1]).index_add_(0, pairs[:, 0], inputs[pairs[:, 1]])
    counts = torch.bincount(pairs[:, 0], minlength=n_users).clamp_min(1).unsqueeze(1)
    frequency = torch.bincount(pairs[:, 1], minlength=inputs.shape[0]).double() + 0.5
    log_p = (frequency / frequency.sum()).log().float().unsqueeze(1)
    return torch.cat([users / counts, torch.ones(n_users, 1)], 1), torch.cat([outputs, log_p], 1)


def item2vec_vectors(model: nn.Module, data: InteractionData) -> tuple[Tensor, Tensor, Tensor]:
    """(input vectors, users, items) of a skip-gram model trained on ``data``'s histories, on
    the CPU: what the run saves and what its validation ranks."""
    state = model.state_dict()
    inputs, outputs = state["input.weight"].detach().float().cpu(), state["output.weight"].detach().float().cpu()
    users, items = history_scorer(inputs, outputs, data.train, data.n_users)
    return inputs, users, items


# ----------------------------------------------------------------------------- the step


def plain_sgd(optim: OptimConfig, train: TrainConfig, device: torch.device) -> bool:
    """Whether the optimiser is word2vec's plain SGD (no momentum, weight decay or clipping) in
    full precision: then :class:`SkipGramSGDStep` applies it by hand."""
    plain = optim.name == "sgd" and optim.momentum == 0 and optim.weight_decay == 0 and not optim.grad_clip
    return plain and autocast_dtype(train.precision, device) is None


class SkipGramSGDStep:
    """word2vec's update: plain SGD at the scheduled learning rate with hand-written sparse
    gradients (:meth:`SkipGram.sgd_step`: gathers and scatter-adds, no autograd), the same update
    as autograd and ``torch.optim.SGD``, several times faster."""

    def __init__(self, model: nn.Module, optim: OptimConfig, train: TrainConfig, *, device: torch.device) -> None:
        self.model = model.to(device)
        self.lr = peak_lr(optim, train.batch_size)

    def __call__(self, batch: dict[str, Any], clock: Clock) -> StepOutput:
        lr = self.lr * clock.lr_factor
        model: Any = self.model
        loss = model.sgd_step(batch, lr)
        model.on_step_end(clock.step, clock.schedule_total)
        pairs = max(int(batch["contexts"].numel()), 1)
        return StepOutput(loss, {"loss": loss.double() / pairs, "pairs": float(pairs), "lr": lr})

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])


def choose_kernel(method: Any, optim: OptimConfig, train: TrainConfig, device: torch.device) -> tuple[str, str]:
    """(``numba`` or ``torch``, why) for ``method.kernel`` (auto, numba, torch): the compiled
    kernel trains SGNS with plain SGD on the CPU, where numba is installed."""
    missing = []
    if device.type != "cpu":
        missing.append(f"the CPU (training on {device})")
    if method.loss != "sgns":
        missing.append(f"method.loss=sgns (not {method.loss})")
    if not plain_sgd(optim, train, device):
        missing.append("plain SGD in fp32 (optim.name=sgd, no momentum, weight decay or grad_clip)")
    if not kernel_available():
        missing.append("numba (pip install 'contrastkit[text]')")
    if method.kernel == "torch":
        return "torch", "method.kernel=torch"
    if not missing:
        return "numba", "compiled per-pair updates"
    if method.kernel == "numba":
        raise UserError(f"method.kernel=numba needs {' and '.join(missing)}; use method.kernel=auto or torch")
    return "torch", "the numba kernel needs " + " and ".join(missing)


class SkipGramKernelStep:
    """word2vec's own update, pair by pair, in the compiled kernel
    (:mod:`contrastkit.methods.skipgram_kernel`): each step trains on the next slice of each of
    ``method.streams`` streams of the corpus (:class:`SkipGramBlocks`) at the scheduled learning
    rate, in torch's number of threads (``train.num_threads``) at once (Hogwild: the step may
    return with the helpers' last jobs running; a checkpoint waits for them). Exact on resume in
    one thread."""

    def __init__(self, model: nn.Module, optim: OptimConfig, train: TrainConfig, *, blocks: SkipGramBlocks) -> None:
        self.model = model
        self.lr = peak_lr(optim, train.batch_size)
        self.seed = train.seed
        method: Any = model
        self.kernel = method.kernel(blocks.keep.numpy(), blocks.noise.numpy())
        nothing = np.zeros((1, 2), dtype=np.int64)
        self.kernel.train(blocks.epoch_corpus(0), blocks.offsets, nothing, lr=0.0, seed=0, epoch=0)  # compile (or load) now
        self.late = (0.0, 0)  # what jobs finished after their step reported

    def settle(self) -> None:
        """Wait for every submitted job (before the weights are read or saved); their loss and
        pairs go to the next step's logs."""
        loss, pairs = self.kernel.drain()
        self.late = (self.late[0] + loss, self.late[1] + pairs)

    def __call__(self, batch: dict[str, Any], clock: Clock) -> StepOutput:
        lr = self.lr * clock.lr_factor
        # several threads: returns with at most a job per helper still running; the loss and pairs are
        # those of the jobs finished since the last step
        loss, pairs = self.kernel.submit(batch["corpus"], batch["offsets"], batch["ranges"], lr=lr, seed=self.seed,
                                         epoch=batch["epoch"], threads=torch.get_num_threads())
        loss, pairs = loss + self.late[0], pairs + self.late[1]
        self.late = (0.0, 0)
        model: Any = self.model
        model.on_step_end(clock.step, clock.schedule_total)
        logs = {"loss": loss / max(pairs, 1), "pairs": float(pairs), "lr": lr}  # numbers already: no device to wait for
        return StepOutput(torch.tensor(loss, dtype=torch.float64), logs)

    def state_dict(self) -> dict[str, Any]:
        self.settle()  # every submitted job done before the weights are saved (or read)
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])  # in place: the kernel's views of the weights stay valid


# ----------------------------------------------------------------------------- the runs


class SequencesRun(TrainedRun):
    """A skip-gram run: its input and output vectors."""

    def weights(self) -> tuple[Tensor, Tensor]:
        """The trained input and output vectors of every token (V, D)."""

        def build() -> tuple[Tensor, Tensor]:
            state = load_run_weights(self.path)
            return state["input.weight"].float(), state["output.weight"].float()

        return self.cached("weights", build)


class WordVectorsRun(SequencesRun):
    """word2vec on a text: token vectors, their nearest neighbours, word-pair similarity."""

    kind = "text (word2vec)"
    noun = "word"

    def corpus(self) -> TokenCorpus:
        return self.cached("corpus", lambda: TokenCorpus.load(self.path / DATA_DIR))

    def evaluate(self, *, verbose: bool = True) -> dict[str, Any]:
        t0 = time.perf_counter()
        s: SequencesConfig = self.config.sequences
        vectors, corpus = self.weights()[0], self.corpus()
        out: dict[str, Any] = {"vocabulary": len(corpus.vocab), "tokens": int(corpus.tokens.size)}
        where = {t: i for i, t in enumerate(corpus.vocab)}
        if s.similarity_file:
            from contrastkit.evaluate.sts import sts_scores

            first, second, scores = read_word_pairs(s.similarity_file)
            norm = (lambda w: w.lower()) if s.lowercase else (lambda w: w)
            rows = [(where[norm(a)], where[norm(b)], g) for a, b, g in zip(first, second, scores, strict=True)
                    if norm(a) in where and norm(b) in where]
            res: dict[str, Any] = {"spearman": None, "pearson": None, "pairs": 0}
            if rows:
                a, b, gold = zip(*rows, strict=True)
                res = dict(sts_scores(vectors[list(a)], vectors[list(b)], list(gold)))
            out["similarity"] = {**res, "file": s.similarity_file, "coverage": len(rows) / len(scores)}
        if s.neighbours:
            out["neighbours"] = {
                t: [{"item": corpus.vocab[j], "score": v} for j, v in nearest(vectors, where[t], 5)]
                for t in s.neighbours if t in where
            }
        out["seconds"] = time.perf_counter() - t0
        if verbose:
            print(f"evaluated {self.path} in {out['seconds']:.1f}s", flush=True)
        return out

    def results_table(self, ev: dict[str, Any]) -> str:
        lines = [f"vocabulary {ev.get('vocabulary')} tokens, corpus {ev.get('tokens')} tokens"]
        sim = ev.get("similarity")
        if sim:
            value = "-" if sim.get("spearman") is None else f"{100 * sim['spearman']:.1f}"
            lines.append(
                f"word similarity ({Path(sim['file']).name}): Spearman {value} (×100) on {sim['pairs']} pairs "
                f"({100 * sim['coverage']:.0f}% of them in the vocabulary)"
            )
        for token, rows in (ev.get("neighbours") or {}).items():
            lines.append(f"  {token}: " + ", ".join(f"{r['item']} {r['score']:.2f}" for r in rows))
        return "\n".join(lines)

    def compare_row(self, results: dict[str, Any]) -> dict[str, Any]:
        """The word-similarity Spearman (× 100) and the share of its pairs in the vocabulary (%)."""
        sim = results.get("eval", {}).get("similarity")
        if not sim:
            return {}
        return {"similarity ρ": pct(sim.get("spearman")), "pairs in vocab %": pct(sim.get("coverage"))}

    def embed(self, spec: str | None, out: Path, *, batch_size: int = 512) -> tuple[int, int]:
        """All token vectors → .npz (vectors, tokens, counts)."""
        if spec not in (None, "all", "tokens"):
            raise UserError(f"--data {spec!r}: a text sequences run exports all its token vectors (--data tokens)")
        if out.suffix != ".npz":
            raise UserError(f"--out {str(out)!r}: token vectors and their tokens go into one .npz file; name it *.npz")
        vectors, corpus = self.weights()[0], self.corpus()
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, vectors=vectors.numpy(), tokens=np.asarray(corpus.vocab), counts=corpus.counts)
        return int(vectors.shape[0]), int(vectors.shape[1])

    def similar(self, item: str, k: int = 10) -> list[dict[str, Any]]:
        """The k tokens closest to ``item`` by cosine of their vectors."""
        corpus = self.corpus()
        token = item.lower() if self.config.sequences.lowercase else item
        rows = nearest(self.weights()[0], corpus.index(token), k)
        return [{"item": corpus.vocab[j], "score": v, "title": ""} for j, v in rows]

    def keyed_vectors(self) -> KeyedVectors:
        """Every token's vector (the input vectors, as `embed` writes them), looked up as the
        corpus was read (lowercased when ``sequences.lowercase``)."""

        def build() -> KeyedVectors:
            corpus = self.corpus()
            fold = str.lower if self.config.sequences.lowercase else None
            return KeyedVectors(corpus.vocab, self.weights()[0], counts=corpus.counts, fold=fold, what="token")

        return self.cached("keyed_vectors", build)

    @property
    def vectors(self) -> KeyedVectors:
        """The word vectors: ``run.vectors["cat"]`` (a numpy vector), ``"cat" in run.vectors``,
        ``len(run.vectors)``, ``run.vectors.words``, ``run.vectors.matrix`` (V, D)."""
        return self.keyed_vectors()

    def most_similar(self, positive: str | Sequence[str] = (), negative: str | Sequence[str] = (),
                     k: int = 10) -> list[tuple[str, float]]:
        """gensim's ``most_similar``: the k words closest (cosine) to the positive words' unit
        vectors minus the negative ones' (3CosAdd analogies: positive=["king", "woman"],
        negative=["man"]), the query words left out; [(word, score)], best first."""
        return self.keyed_vectors().most_similar(positive, negative, k)


class ItemVectorsRun(UserItemVectors, SequencesRun):
    """item2vec on interaction histories: item vectors, users as their histories, recommendations."""

    kind = "interactions (item2vec)"
    scoring = "score = mean over the user's train items of in·out + log P(item); "

    def interactions(self) -> InteractionData:
        return self.cached("split", lambda: saved_split(self.path))

    def _history_vectors(self) -> tuple[Tensor, Tensor]:
        data, (inputs, outputs) = self.interactions(), self.weights()
        return history_scorer(inputs, outputs, data.train, data.n_users)

    def vectors(self) -> tuple[Tensor, Tensor]:
        """User and item vectors whose dot product scores an item for a user (:func:`history_scorer`)."""
        return self.cached("vectors", lambda: cached_vectors(self.path, self._history_vectors))

    def evaluate(self, *, verbose: bool = True) -> dict[str, Any]:
        users, items = self._history_vectors()
        save_vectors(self.path, users, items)
        return evaluate_recommender(self.config.method.name, embedding_scorer(users, items), self.interactions(),
                                    self.config.recsys, self.device, scoring=self.scoring, verbose=verbose, where=self.path)

    def results_table(self, ev: dict[str, Any]) -> str:
        return ranking_table(ev)

    def similar(self, item: str, k: int = 10) -> list[dict[str, Any]]:
        """The k items closest to ``item`` by cosine of their input vectors, with their titles."""
        data = self.interactions()
        rows = nearest(self.weights()[0], data.item_index(item), k)
        return [{"item": data.item_ids[j], "score": v, "title": data.title(j)} for j, v in rows]

    def keyed_vectors(self) -> KeyedVectors:
        """Every item's input vector by item id (the vectors `similar` compares)."""
        return self.cached("keyed_vectors", lambda: KeyedVectors(self.interactions().item_ids, self.weights()[0], what="item"))


# ----------------------------------------------------------------------------- the task


@register_task
class SequencesTask(Task):
    """Token embeddings from sequences: word2vec on text, item2vec on interaction histories."""

    name = "sequences"
    sections: ClassVar[dict[str, type | None]] = {
        "sequences": SequencesConfig, "recsys": RecsysConfig, "eval": SequencesEvalConfig,
    }
    unread: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": ("channels_last", "sync_batchnorm"),
        "eval": ("baselines", "plots", "batch_size"),
    }
    default_method = "skipgram"
    runs = (WordVectorsRun, ItemVectorsRun)

    @classmethod
    def needs(cls, cfg: Config) -> tuple[str, str]:
        s, r = cfg.sequences, cfg.recsys
        if s.source == "text":
            return s.text_file or "a text file (sequences.text_file)", ""
        return ("given split files (recsys.root)" if r.split == "given" else r.data), ""

    @classmethod
    def validate(cls, cfg: Config) -> None:
        if cfg.sequences.source == "text" and cfg.eval.valid_every:
            raise UserError(f"eval.valid_every: {NO_TEXT_VALIDATION}")

    @classmethod
    def validation(cls, cfg: Config) -> ValidationSpec:
        """item2vec: ``val_`` + ``recsys.valid_metric`` on the valid split, higher is better,
        every ``eval.valid_every`` steps; word2vec on a text corpus has none."""
        if cfg.sequences.source == "text":
            raise UserError(NO_TEXT_VALIDATION)
        return ValidationSpec(valid_metric_name(cfg.recsys), "max", (), "eval.valid_every")

    def load(self, run_dir: Path) -> TrainedRun:
        cls = ItemVectorsRun if self.cfg.sequences.source == "interactions" else WordVectorsRun
        return cls(Path(run_dir), self.cfg)

    def _corpus(self, ctx: RunContext) -> tuple[TokenCorpus, InteractionData | None]:
        s: SequencesConfig = ctx.cfg.sequences
        folder = ctx.run_dir / DATA_DIR
        if s.source == "interactions":
            interactions = run_split(ctx.run_dir, ctx.cfg.recsys, ctx.cfg.train.seed, resume=ctx.resume)
            if s.order == "time" and interactions.train_time is None:
                raise UserError("sequences.order=time needs timestamps (recsys.time_column); or use sequences.order=set")
            times = interactions.train_time if s.order == "time" else None
            return corpus_from_histories(interactions.train, times, interactions.n_items, interactions.item_ids), interactions
        if ctx.resume and folder.is_dir():
            return TokenCorpus.load(folder), None
        if not s.text_file:
            # checked here, not at load: the shipped recipe names no file and is completed with --set
            raise UserError("sequences.source text needs sequences.text_file (a .txt file, sick:SPLIT or FILE.csv#column)")
        sentences = text_sentences(s.text_file, tokenizer=s.tokenizer, lowercase=s.lowercase, data_root=s.data_root)
        corpus = corpus_from_sentences(sentences, min_count=s.min_count, max_vocab=s.max_vocab)
        corpus.save(folder)
        return corpus, None

    def training(self, ctx: RunContext) -> Training:
        if ctx.world_size > 1:
            raise UserError("task sequences trains in one process; run it without --nproc / torchrun")
        cfg = ctx.cfg
        m: Any = cfg.method  # the skip-gram options (window, negatives, sampling)
        self.corpus, self.interactions = self._corpus(ctx)
        s: SequencesConfig = cfg.sequences
        kernel, why = choose_kernel(m, cfg.optim, cfg.train, ctx.device)
        options = dict(
            batch_size=cfg.train.batch_size, window=m.window, negatives=m.negatives, sample=m.sample,
            noise_power=m.noise_power, dynamic_window=m.dynamic_window, shared_negatives=m.shared_negatives,
            shuffle_sentences=s.source == "interactions" and s.order == "set", seed=cfg.train.seed, device=ctx.device,
        )
        loader = (SkipGramBlocks(self.corpus, streams=m.streams, **options) if kernel == "numba"
                  else SkipGramLoader(self.corpus, **options))
        model = self.model = get_method(m.name, self.name).build(m, vocab_size=len(self.corpus.vocab), log_noise=loader.log_noise)
        step: Any
        if isinstance(loader, SkipGramBlocks):
            step = SkipGramKernelStep(model, cfg.optim, cfg.train, blocks=loader)
            threads = step.kernel.threads(torch.get_num_threads())
            self.kernel_note = f"numba kernel ({why}, {threads} thread{'s' if threads > 1 else ''})"
        else:
            self.kernel_note = f"PyTorch ({why})"
            kind = SkipGramSGDStep if plain_sgd(cfg.optim, cfg.train, ctx.device) else GradientStep
            step = kind(model, cfg.optim, cfg.train, device=ctx.device)
        self.validator = None if self.interactions is None else self._validation(ctx, step, self.interactions)
        return Training(step, loader, unit="tokens", callbacks=[self.validator] if self.validator is not None else [])

    def _validation(self, ctx: RunContext, step: Any, data: InteractionData) -> Validation:
        """item2vec's validation: ``recsys.valid_metric`` of the users' history vectors on the
        valid split (train items masked) every ``eval.valid_every`` steps and after the last (the
        kernel's jobs finished first; nothing the training draws from is touched)."""
        cfg, r = ctx.cfg, ctx.cfg.recsys

        def evaluate() -> float:
            if isinstance(step, SkipGramKernelStep):
                step.settle()
            _, users, items = item2vec_vectors(self.model, data)
            return float(split_metrics(embedding_scorer(users, items), data, r, "valid", ctx.device)[r.valid_metric])

        return Validation(evaluate, metric=valid_metric_name(r), every=cfg.eval.valid_every or None, direction="max",
                          describe={"split": "valid"}, note=None if cfg.train.progress else ctx.log)

    def describe(self, ctx: RunContext) -> str:
        what = "histories" if self.interactions is not None else "sentences"
        return (
            f"training {ctx.cfg.method.name} on {self.corpus.tokens.size} tokens in {self.corpus.offsets.size - 1} {what}, "
            f"vocabulary {len(self.corpus.vocab)}, on {ctx.device}, {self.kernel_note}"
        )

    def after_training(self, ctx: RunContext, summary: Any) -> dict[str, Any]:
        """vectors.npz; for item2vec the user and item vectors and results.json's ``validation``
        (a run stopped before its last step, by its time budget, is validated at its final step)."""
        if not ctx.is_main:
            return {}
        vectors = self.model.vectors()  # type: ignore[operator]
        np.savez(ctx.run_dir / VECTORS_FILE, vectors=vectors.numpy(), tokens=np.asarray(self.corpus.vocab),
                 counts=self.corpus.counts)
        if self.interactions is None:
            return {}
        # user / item vectors for embed, export, recommend (with or without eval)
        _, users, items = item2vec_vectors(self.model, self.interactions)
        save_vectors(ctx.run_dir, users, items)
        assert self.validator is not None
        self.validator.finish(summary.steps)
        return {"validation": self.validator.results()}
