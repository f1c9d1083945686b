"""Token sequences for skip-gram training (word2vec, item2vec): a vocabulary with counts and
the corpus as one int32 array with sentence boundaries, built from a text file or from users'
interaction histories; and the batches of (centre, context, negatives) that train on it.

Batches are vectorised: step b takes the corpus positions [b·B, (b+1)·B), keeps each token with
word2vec's subsampling probability, pairs every kept centre with the kept tokens within a
random window of it (1..W, word2vec's dynamic window) in its own sentence, and draws K noise
tokens from the unigram distribution raised to ``noise_power`` (0.75) — per pair, or once per
centre and shared by all its pairs (each pair still has K negatives; the negatives of a
centre's pairs are then the same draws, which changes the variance, not the expected loss, and
cuts the work of the negative term by the number of contexts, ~6 on average). Every random
draw of a batch comes from a generator seeded by (seed, epoch, step), so a resumed run makes
exactly the batches of an uninterrupted one, with no loader state to save.

For the compiled kernel (:mod:`contrastkit.methods.skipgram_kernel`), :class:`SkipGramBlocks`
yields the ranges of positions themselves (from several interleaved streams of the corpus): the
kernel subsamples, draws the windows and the negatives and updates the vectors pair by pair,
with the same keep probabilities and noise distribution.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrastkit.errors import UserError

TOKENIZERS: tuple[str, ...] = ("words", "whitespace")
_WORD = re.compile(r"\w+(?:'\w+)*")
CORPUS_FILE = "corpus.npz"
VOCAB_FILE = "vocab.json"


def tokenize(line: str, kind: str = "words", lowercase: bool = True) -> list[str]:
    """``words``: runs of letters / digits (with inner apostrophes); ``whitespace``: ``str.split``."""
    text = line.lower() if lowercase else line
    return text.split() if kind == "whitespace" else _WORD.findall(text)


@dataclass
class TokenCorpus:
    """Sentences of token ids, concatenated: ``tokens[offsets[s]:offsets[s + 1]]`` is sentence s."""

    tokens: np.ndarray  # (N,) int32
    offsets: np.ndarray  # (S + 1,) int64
    vocab: list[str]
    counts: np.ndarray  # (V,) int64, occurrences of each vocabulary entry in the corpus

    @property
    def sentence_of(self) -> np.ndarray:
        """(N,) the sentence of each token."""
        return np.repeat(np.arange(self.offsets.size - 1), np.diff(self.offsets))

    def index(self, token: str) -> int:
        where = {t: i for i, t in enumerate(self.vocab)}
        if token not in where:
            sample = ", ".join(self.vocab[:3])
            raise UserError(f"unknown token {token!r}: not in the run's vocabulary of {len(self.vocab)} ({sample}, ...)")
        return where[token]

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / CORPUS_FILE, tokens=self.tokens, offsets=self.offsets, counts=self.counts)
        tmp = folder / f".{VOCAB_FILE}.tmp"
        tmp.write_text(json.dumps(self.vocab))
        tmp.replace(folder / VOCAB_FILE)

    @classmethod
    def load(cls, folder: Path) -> TokenCorpus:
        if not (folder / CORPUS_FILE).is_file() or not (folder / VOCAB_FILE).is_file():
            raise UserError(f"{str(folder)!r} holds no token corpus ({CORPUS_FILE}, {VOCAB_FILE})")
        with np.load(folder / CORPUS_FILE) as arrays:
            tokens, offsets, counts = arrays["tokens"], arrays["offsets"], arrays["counts"]
        return cls(tokens, offsets, json.loads((folder / VOCAB_FILE).read_text()), counts)


def corpus_from_sentences(
    sentences: Iterable[list[str]] | Any, *, min_count: int = 5, max_vocab: int | None = None
) -> TokenCorpus:
    """Vocabulary (tokens seen >= ``min_count`` times, the ``max_vocab`` most frequent; ties by
    first appearance) and the corpus without the other tokens. ``sentences`` is iterated twice."""
    counter: Counter[str] = Counter()
    for sentence in sentences:
        counter.update(sentence)
    kept = [(t, c) for t, c in counter.items() if c >= min_count]
    kept.sort(key=lambda tc: -tc[1])  # stable: equal counts keep their first-appearance order
    if max_vocab is not None:
        kept = kept[:max_vocab]
    if not kept:
        raise UserError(
            f"no token occurs {min_count} times or more ({len(counter)} distinct tokens); lower sequences.min_count"
        )
    vocab = [t for t, _ in kept]
    where = {t: i for i, t in enumerate(vocab)}
    chunks: list[np.ndarray] = []
    lengths: list[int] = []
    for sentence in sentences:
        ids = np.fromiter((where[t] for t in sentence if t in where), dtype=np.int32)
        if ids.size:
            chunks.append(ids)
            lengths.append(ids.size)
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    counts = np.bincount(tokens, minlength=len(vocab)).astype(np.int64)
    return TokenCorpus(tokens, offsets, vocab, counts)


class _TextLines:
    """The token lists of a text file, re-read on each iteration (memory: one line at a time)."""

    def __init__(self, path: Path, kind: str, lowercase: bool) -> None:
        self.path, self.kind, self.lowercase = path, kind, lowercase

    def __iter__(self) -> Iterator[list[str]]:
        opener: Any = gzip.open if self.path.suffix == ".gz" else open
        with opener(self.path, "rt", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                tokens = tokenize(line, self.kind, self.lowercase)
                if tokens:
                    yield tokens


def text_sentences(spec: str, *, tokenizer: str = "words", lowercase: bool = True, data_root: str | None = None) -> Any:
    """Token lists of a text source: a .txt / .txt.gz file (one sentence or document per line,
    streamed), or any text spec of the text task (``sick:train``, ``FILE.csv#column``)."""
    path = Path(spec.partition("#")[0])
    if path.suffix in (".txt", ".gz", ".cor", "") and path.is_file():
        return _TextLines(path, tokenizer, lowercase)
    from contrastkit.data.text.corpus import read_sentences

    file, _, column = spec.partition("#")
    lines = read_sentences(file, [column] if column else [], None, data_root=data_root, unique=False)
    return [tokens for line in lines if (tokens := tokenize(line, tokenizer, lowercase))]


def corpus_from_histories(
    pairs: np.ndarray, times: np.ndarray | None, n_items: int, item_ids: list[str]
) -> TokenCorpus:
    """Each user's items as one sentence, in time order where ``times`` are given (ties and
    no times: the order of the pairs). The vocabulary is every item, with its count."""
    users = pairs[:, 0]
    key = np.zeros(users.size) if times is None else np.asarray(times, dtype=np.float64)
    order = np.lexsort((np.arange(users.size), key, users))
    tokens = pairs[order, 1].astype(np.int32)
    lengths = np.bincount(users, minlength=int(users.max()) + 1 if users.size else 0)
    offsets = np.concatenate([[0], np.cumsum(lengths[lengths > 0])]).astype(np.int64)
    counts = np.bincount(tokens, minlength=n_items).astype(np.int64)
    return TokenCorpus(tokens, offsets, list(item_ids), counts)


# ----------------------------------------------------------------------------- sampling


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
    """word2vec's subsampling: a token of relative frequency f is kept with probability
    ``(sqrt(f / t) + 1) · t / f`` (capped at 1; t = ``sample``, 0 = keep everything)."""
    if sample <= 0:
        return np.ones(counts.shape, dtype=np.float64)
    f = counts / max(int(counts.sum()), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = (np.sqrt(f / sample) + 1.0) * sample / f
    return np.minimum(np.nan_to_num(p, nan=1.0, posinf=1.0), 1.0)


def noise_distribution(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
    """The noise distribution q ∝ count^power (Mikolov et al. 2013: 0.75)."""
    weights = counts.astype(np.float64) ** power
    total = weights.sum()
    if total <= 0:
        raise UserError("the noise distribution needs at least one token with a count above 0")
    return weights / total


class SkipGramLoader:
    """Batches ``{"centers", "contexts", "negatives"}`` of skip-gram pairs over a corpus (see the
    module docstring); ``batch_size`` corpus positions per step, ``len()`` steps per epoch."""

    def __init__(
        self,
        corpus: TokenCorpus,
        *,
        batch_size: int,
        window: int = 5,
        negatives: int = 5,
        sample: float = 1e-3,
        noise_power: float = 0.75,
        dynamic_window: bool = True,
        shared_negatives: bool = True,
        shuffle_sentences: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if corpus.tokens.size < 2:
            raise UserError(f"the corpus has {corpus.tokens.size} token(s); skip-gram needs at least 2")
        self.corpus = corpus
        self.batch_size, self.window, self.negatives = int(batch_size), int(window), int(negatives)
        self.dynamic_window, self.shuffle_sentences = dynamic_window, shuffle_sentences
        self.shared_negatives = shared_negatives
        self.seed, self.device = int(seed), torch.device(device)
        self.keep = torch.from_numpy(keep_probabilities(corpus.counts, sample)).float()
        self.noise = torch.from_numpy(noise_distribution(corpus.counts, noise_power))
        self.log_noise = self.noise.log().float()
        # a table of ~50 draws per vocabulary entry (word2vec's unigram table): O(1) sampling
        size = max(1_000_000, 50 * len(corpus.vocab))
        cumulative = torch.cumsum(self.noise, 0)
        self.table = torch.searchsorted(cumulative, (torch.arange(size, dtype=torch.float64) + 0.5) / size)
        self.table.clamp_(max=len(corpus.vocab) - 1)
        self._epoch_tokens: tuple[int, Tensor] | None = None

    @functools.cached_property
    def _tokens(self) -> Tensor:
        return torch.from_numpy(self.corpus.tokens.astype(np.int64))

    @functools.cached_property
    def _sentence(self) -> Tensor:
        return torch.from_numpy(self.corpus.sentence_of)

    def __len__(self) -> int:
        return -(-int(self.corpus.tokens.size) // self.batch_size)

    def _generator(self, *parts: int) -> torch.Generator:
        """A generator for one (epoch, step, purpose): the same numbers on every run."""
        key = self.seed
        for part in parts:
            key = (key * 1_000_003 + part + 7) % (1 << 62)
        return torch.Generator().manual_seed(key)

    def tokens_of_epoch(self, epoch: int) -> Tensor:
        """The corpus of ``epoch``: as read, or with each sentence shuffled (sets of items)."""
        if not self.shuffle_sentences:
            return self._tokens
        if self._epoch_tokens is None or self._epoch_tokens[0] != epoch:
            key = torch.rand(self._tokens.numel(), generator=self._generator(epoch, -1), dtype=torch.float64)
            order = np.lexsort((key.numpy(), self._sentence.numpy()))
            self._epoch_tokens = (epoch, self._tokens[torch.from_numpy(order)])
        return self._epoch_tokens[1]

    def pairs(self, epoch: int, step: int) -> tuple[Tensor, Tensor, Tensor]:
        """The kept centres of one step (C,), each pair's centre (P,: an index into them) and each
        pair's context token (P,); centres without a context are left out."""
        tokens = self.tokens_of_epoch(epoch)
        n, w = tokens.numel(), self.window
        lo, hi = step * self.batch_size, min(n, (step + 1) * self.batch_size)
        gen = self._generator(epoch, step)
        # the span the windows can reach, subsampled with this step's draws
        a, b = max(0, lo - w * 4), min(n, hi + w * 4)
        span = tokens[a:b]
        kept = torch.rand(span.numel(), generator=gen) < self.keep[span]
        idx = torch.nonzero(kept).flatten()
        ids, sent = span[idx], self._sentence[a:b][idx]
        pos = idx + a
        centre = torch.nonzero((pos >= lo) & (pos < hi)).flatten()
        reach = (
            torch.randint(1, w + 1, (centre.numel(),), generator=gen) if self.dynamic_window
            else torch.full((centre.numel(),), w)
        )
        rows = torch.arange(centre.numel())
        owners: list[Tensor] = []
        contexts: list[Tensor] = []
        for offset in range(1, w + 1):
            for sign in (-1, 1):
                other = centre + sign * offset
                ok = (other >= 0) & (other < ids.numel()) & (reach >= offset)
                r, o = rows[ok], other[ok]
                same = sent[centre[r]] == sent[o]
                owners.append(r[same])
                contexts.append(ids[o[same]])
        owner = torch.cat(owners)
        used = torch.bincount(owner, minlength=centre.numel()) > 0
        remap = torch.cumsum(used.long(), 0) - 1
        return ids[centre[used]], remap[owner], torch.cat(contexts)

    def batches(self, epoch: int, start: int = 0) -> Iterator[dict[str, Any]]:
        """``centers`` (C,) the step's centre tokens, ``pair_center`` (P,) each pair's centre (an
        index into ``centers``), ``contexts`` (P,), ``negatives`` (C, K) — drawn once per centre
        and shared by its pairs (``shared_negatives``) — or (P, K), one draw per pair."""
        for step in range(start, len(self)):
            centres, owner, contexts = self.pairs(epoch, step)
            if not self.shared_negatives:  # one row per pair: every pair its own negatives
                centres, owner = centres[owner], torch.arange(owner.numel())
            draws = torch.randint(
                0, self.table.numel(), (centres.numel(), self.negatives), generator=self._generator(epoch, step, 1)
            )
            yield {
                "centers": centres.to(self.device),
                "pair_center": owner.to(self.device),
                "contexts": contexts.to(self.device),
                "negatives": self.table[draws].to(self.device),
                "tokens": min(self.batch_size, int(self.corpus.tokens.size) - step * self.batch_size),
            }

    def units(self, batch: dict[str, Any]) -> int:
        """Corpus tokens (positions) a batch covers."""
        return int(batch["tokens"])

    def state_dict(self) -> dict[str, Any]:
        return {}  # batches depend on (seed, epoch, step) only

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Stateless: see :meth:`state_dict`."""


class SkipGramBlocks(SkipGramLoader):
    """What the compiled kernel trains on, one step at a time: the epoch's corpus read as
    ``streams`` interleaved streams (its positions cut into that many contiguous parts, each step
    taking the next ~``batch_size / streams`` positions of every part, in turn). Consecutive
    updates then come from distant places of the corpus — different documents, different
    users — rather than from one long document (SGD on a bursty order learns worse: WordSim-353
    0.223 with one stream, 0.254 with eight, on the benchmark's Wikipedia sample).

    A step's batch: ``{"corpus": the epoch's tokens (int32), "offsets": sentence boundaries,
    "ranges": (streams, 2) [start, end) positions, "epoch", "tokens": positions in all}`` (the
    arrays are the loader's own, shared, not copied). The kernel draws the subsampling, windows and
    negatives itself, from (seed, epoch, position), with this loader's :attr:`keep` probabilities
    and :attr:`noise` distribution; contexts may lie outside the ranges, within the centre's
    sentence."""

    def __init__(self, corpus: TokenCorpus, *, streams: int = 1, **options: Any) -> None:
        super().__init__(corpus, **options)
        self.streams = max(1, int(streams))
        self.offsets = corpus.offsets.astype(np.int64, copy=False)
        self._epoch_arrays: tuple[int, np.ndarray] | None = None

    def epoch_corpus(self, epoch: int) -> np.ndarray:
        """The tokens of ``epoch`` as int32 (each sentence shuffled for sets of items)."""
        if not self.shuffle_sentences:
            return self.corpus.tokens.astype(np.int32, copy=False)
        if self._epoch_arrays is None or self._epoch_arrays[0] != epoch:
            self._epoch_arrays = (epoch, self.tokens_of_epoch(epoch).numpy().astype(np.int32))
        return self._epoch_arrays[1]

    def ranges(self, step: int) -> np.ndarray:
        """(streams, 2): the [start, end) positions of every stream that step ``step`` trains on."""
        n, steps = int(self.corpus.tokens.size), len(self)
        bounds = (np.arange(self.streams + 1, dtype=np.int64) * n) // self.streams
        start, length = bounds[:-1], np.diff(bounds)
        return np.stack([start + (step * length) // steps, start + ((step + 1) * length) // steps], axis=1)

    def batches(self, epoch: int, start: int = 0) -> Iterator[dict[str, Any]]:
        tokens = self.epoch_corpus(epoch)
        for step in range(start, len(self)):
            ranges = self.ranges(step)
            yield {"corpus": tokens, "offsets": self.offsets, "ranges": ranges, "epoch": epoch,
                   "tokens": int((ranges[:, 1] - ranges[:, 0]).sum())}
