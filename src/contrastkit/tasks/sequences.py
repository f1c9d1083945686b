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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from contrastkit.config import Config
from contrastkit.data.interactions import InteractionData
from contrastkit.data.sequences import (
    TOKENIZERS,
    SkipGramLoader,
    TokenCorpus,
    corpus_from_histories,
    corpus_from_sentences,
    text_sentences,
)
from contrastkit.errors import UserError
from contrastkit.methods.registry import get_method
from contrastkit.options import option
from contrastkit.runs import load_run_checkpoint
from contrastkit.tasks.base import RunContext, Task, get_task, register_task
from contrastkit.tasks.recsys import (
    DATA_DIR,
    RecsysConfig,
    evaluate_split,
    load_data,
    save_embeddings,
    split_protocol,
)
from contrastkit.train import TrainSummary

SOURCES: tuple[str, ...] = ("text", "interactions")
ORDERS: tuple[str, ...] = ("time", "set")
VECTORS_FILE = "vectors.npz"


@dataclass
class SequencesConfig:
    """Where the sequences come from and how they are read and evaluated."""

    source: str = option("text", "text: a corpus; interactions: users' histories (read by the recsys section)", choices=SOURCES)
    text_file: str | None = option(None, "text: a .txt(.gz) file (a sentence or document per line), sick:SPLIT or FILE.csv#column")
    tokenizer: str = option("words", "words (letters, digits, apostrophes) or whitespace (already tokenised)", choices=TOKENIZERS)
    lowercase: bool = option(True, "text: lowercase before tokenising")
    min_count: int = option(5, "drop tokens seen fewer times (text)", ge=1)
    max_vocab: int | None = option(None, "keep the most frequent tokens only", ge=1)
    order: str = option("time", "interactions: each history in time order, or as a set (reshuffled every epoch)", choices=ORDERS)
    similarity_file: str | None = option(None, "text: word pairs with a similarity score (word1, word2, score; e.g. WordSim-353)")
    neighbours: list[str] = option(help="tokens whose nearest neighbours the results list", factory=list)
    data_root: str | None = option(None, "where named text sources (sick) are looked for first")


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


@register_task
class SequencesTask(Task):
    """Token embeddings from sequences: word2vec on text, item2vec on interaction histories."""

    name = "sequences"
    sections: ClassVar[dict[str, type]] = {"sequences": SequencesConfig, "recsys": RecsysConfig}
    default_method = "skipgram"
    unit = "tokens"

    # ------------------------------------------------------------------ training

    def data(self, ctx: RunContext) -> dict[str, Any]:
        if ctx.world_size > 1:
            raise UserError("task sequences trains in one process; run it without --nproc / torchrun")
        s: SequencesConfig = ctx.cfg.sequences
        folder = ctx.run_dir / DATA_DIR
        if s.source == "interactions":
            interactions = InteractionData.load(folder) if ctx.resume and folder.is_dir() else load_data(ctx.cfg)
            if not ctx.resume:
                interactions.save(folder)
            if s.order == "time" and interactions.train_time is None:
                raise UserError("sequences.order=time needs timestamps (recsys.time_column); or use sequences.order=set")
            times = interactions.train_time if s.order == "time" else None
            corpus = corpus_from_histories(interactions.train, times, interactions.n_items, interactions.item_ids)
            return {"corpus": corpus, "interactions": interactions}
        if ctx.resume and folder.is_dir():
            return {"corpus": TokenCorpus.load(folder), "interactions": None}
        if not s.text_file:
            # checked here, not at load: the shipped recipe names no file and is completed with --set
            raise UserError("sequences.source text needs sequences.text_file (a .txt file, sick:SPLIT or FILE.csv#column)")
        sentences = text_sentences(s.text_file, tokenizer=s.tokenizer, lowercase=s.lowercase, data_root=s.data_root)
        corpus = corpus_from_sentences(sentences, min_count=s.min_count, max_vocab=s.max_vocab)
        corpus.save(folder)
        return {"corpus": corpus, "interactions": None}

    def model(self, ctx: RunContext, data: dict[str, Any]) -> nn.Module:
        corpus: TokenCorpus = data["corpus"]
        loader = self._loader(ctx, corpus)
        return get_method(ctx.cfg.method.name, self.name).build(
            ctx.cfg.method, vocab_size=len(corpus.vocab), log_noise=loader.log_noise
        )

    def _loader(self, ctx: RunContext, corpus: TokenCorpus) -> SkipGramLoader:
        m: Any = ctx.cfg.method  # the skip-gram options (window, negatives, sampling)
        s: SequencesConfig = ctx.cfg.sequences
        return SkipGramLoader(
            corpus, batch_size=ctx.cfg.train.batch_size, window=m.window, negatives=m.negatives, sample=m.sample,
            noise_power=m.noise_power, dynamic_window=m.dynamic_window, shared_negatives=m.shared_negatives,
            shuffle_sentences=s.source == "interactions" and s.order == "set", seed=ctx.cfg.train.seed, device=ctx.device,
        )

    def loader(self, ctx: RunContext, data: dict[str, Any], model: nn.Module) -> SkipGramLoader:
        return self._loader(ctx, data["corpus"])

    def describe(self, ctx: RunContext, data: dict[str, Any]) -> str:
        corpus: TokenCorpus = data["corpus"]
        what = "histories" if data["interactions"] is not None else "sentences"
        return (
            f"training {ctx.cfg.method.name} on {corpus.tokens.size} tokens in {corpus.offsets.size - 1} {what}, "
            f"vocabulary {len(corpus.vocab)}, on {ctx.device}"
        )

    def after_training(self, ctx: RunContext, data: dict[str, Any], model: nn.Module, summary: TrainSummary) -> dict[str, Any]:
        if ctx.is_main:
            corpus: TokenCorpus = data["corpus"]
            vectors = model.vectors()  # type: ignore[operator]
            np.savez(ctx.run_dir / VECTORS_FILE, vectors=vectors.numpy(), tokens=np.asarray(corpus.vocab), counts=corpus.counts)
            interactions: InteractionData | None = data["interactions"]
            if interactions is not None:  # user / item vectors for embed, export, recommend (with or without eval)
                outputs = model.state_dict()["output.weight"].detach().float()
                users, items = history_scorer(vectors, outputs, interactions.train, interactions.n_users)
                save_embeddings(ctx.run_dir, users, items)
        return {}

    # ------------------------------------------------------------------ reload

    def _vectors(self, run_dir: Path, cfg: Config) -> tuple[Tensor, TokenCorpus | None, InteractionData | None]:
        """The trained input vectors and the corpus (text) or the interaction split (interactions)."""
        folder = Path(run_dir) / DATA_DIR
        vectors = self._weights(run_dir)[0]
        if cfg.sequences.source == "interactions":
            return vectors, None, InteractionData.load(folder)
        return vectors, TokenCorpus.load(folder), None

    @staticmethod
    def _weights(run_dir: Path) -> tuple[Tensor, Tensor]:
        state = load_run_checkpoint(run_dir)["model"]
        return state["input.weight"].float(), state["output.weight"].float()

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, run_dir: Path, cfg: Config, *, verbose: bool = True) -> dict[str, Any]:
        from contrastkit.tasks.runner import setup_runtime

        device = setup_runtime(cfg, distributed=False)
        t0 = time.perf_counter()
        vectors, corpus, interactions = self._vectors(run_dir, cfg)
        if interactions is not None:
            outputs = self._weights(run_dir)[1]
            out = self._evaluate_ranking(run_dir, cfg, vectors, outputs, interactions, device)
        else:
            assert corpus is not None
            out = self._evaluate_text(cfg, vectors, corpus)
        out["seconds"] = time.perf_counter() - t0
        if verbose:
            print(f"evaluated {run_dir} in {out['seconds']:.1f}s", flush=True)
        return out

    def _evaluate_ranking(
        self, run_dir: Path, cfg: Config, items: Tensor, outputs: Tensor, data: InteractionData, device: torch.device
    ) -> dict[str, Any]:
        from contrastkit.evaluate.ranking import embedding_scorer, popularity_scorer

        users, items_out = history_scorer(items, outputs, data.train, data.n_users)
        save_embeddings(run_dir, users, items_out)
        scorers = {cfg.method.name: embedding_scorer(users, items_out), "popularity": popularity_scorer(data.item_popularity())}
        r: RecsysConfig = cfg.recsys
        out: dict[str, Any] = {
            "model": cfg.method.name,
            "protocol": (
                f"{split_protocol(r)}; full ranking over "
                f"{data.n_items} items; score = mean over the user's train items of in·out + log P(item); train "
                "items masked (and valid items on test)"
            ),
            "data": data.stats,
        }
        for split in ("test", "valid"):
            out[split] = {name: evaluate_split(s, data, cfg, split, device) for name, s in scorers.items()}
        return out

    def _evaluate_text(self, cfg: Config, vectors: Tensor, corpus: TokenCorpus) -> dict[str, Any]:
        s: SequencesConfig = cfg.sequences
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
                t: [{"item": r["item"], "score": r["score"]} for r in self._nearest(vectors, corpus.vocab, where[t], 5)]
                for t in s.neighbours if t in where
            }
        return out

    @staticmethod
    def _nearest(vectors: Tensor, names: list[str], i: int, k: int) -> list[dict[str, Any]]:
        """The k rows closest to row i by cosine: {"item", "score", "index"}."""
        normed = torch.nn.functional.normalize(vectors, dim=1)
        sims = normed @ normed[i]
        sims[i] = -torch.inf
        top = torch.topk(sims, min(k, len(names) - 1))
        return [
            {"item": names[j], "score": float(v), "index": j}
            for v, j in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]

    def results_table(self, ev: dict[str, Any]) -> str:
        if "test" in ev:  # item2vec: the recommenders' table
            return get_task("recsys").results_table(ev)
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

    # ------------------------------------------------------------------ use

    def embed(self, run_dir: Path, cfg: Config, spec: str | None, out: Path, *, batch_size: int) -> tuple[int, int]:
        """Text: all token vectors → .npz (vectors, tokens, counts); interactions: as a recsys run."""
        if cfg.sequences.source == "interactions":
            return get_task("recsys").embed(run_dir, cfg, spec, out, batch_size=batch_size)
        if spec not in (None, "all", "tokens"):
            raise UserError(f"--data {spec!r}: a text sequences run exports all its token vectors (--data tokens)")
        vectors, corpus, _ = self._vectors(run_dir, cfg)
        assert corpus is not None
        if out.suffix != ".npz":
            raise UserError(f"--out {str(out)!r}: token vectors and their tokens go into one .npz file; name it *.npz")
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, vectors=vectors.numpy(), tokens=np.asarray(corpus.vocab), counts=corpus.counts)
        return int(vectors.shape[0]), int(vectors.shape[1])

    def interaction_data(self, run_dir: Path, cfg: Config) -> InteractionData | None:
        """The interaction split of an item2vec run (None for text), for ``contrastkit serve``."""
        if cfg.sequences.source != "interactions":
            return None
        return InteractionData.load(Path(run_dir) / DATA_DIR)

    def recommend(self, run_dir: Path, user: str, k: int = 10) -> list[dict[str, Any]]:
        """Top-k items for a user of an item2vec run (the user's vector: their history's mean)."""
        from contrastkit.runs import read_run_config

        if read_run_config(run_dir).sequences.source != "interactions":
            raise UserError("this sequences run learned from text; recommend needs sequences.source interactions")
        out: list[dict[str, Any]] = get_task("recsys").recommend(run_dir, user, k)  # type: ignore[attr-defined]
        return out

    def similar(self, run_dir: Path, item: str, k: int = 10) -> list[dict[str, Any]]:
        """The k tokens (or items, with their titles) closest to ``item`` by cosine of their vectors."""
        from contrastkit.runs import read_run_config

        cfg = read_run_config(run_dir)
        vectors, corpus, interactions = self._vectors(run_dir, cfg)
        if interactions is not None:
            rows = self._nearest(vectors, interactions.item_ids, interactions.item_index(item), k)
            return [{**r, "title": interactions.title(r.pop("index"))} for r in rows]
        assert corpus is not None
        token = item.lower() if cfg.sequences.lowercase else item
        rows = self._nearest(vectors, corpus.vocab, corpus.index(token), k)
        return [{"item": r["item"], "score": r["score"], "title": ""} for r in rows]
