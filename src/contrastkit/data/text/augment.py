"""Discrete text augmentations for contrastive views: span crop, word deletion, word swap and
synonym replacement (EDA, Wei & Zou 2019, arXiv:1901.11196; span cropping as in DeCLUTR,
Giorgi et al. 2021, arXiv:2006.03659).

Synonyms come from WordNet where its database files are installed (Debian's ``wordnet-base``
puts them in /usr/share/wordnet) or from nearest neighbours in an encoder's own token
embeddings. Randomness comes from a ``numpy.random.Generator`` passed in, so a loader that
seeds it from a checkpointed ``torch.Generator`` replays the same views after a resume.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from contrastkit.errors import UserError, check_choice

WORDNET_DIRS: tuple[Path, ...] = (Path("/usr/share/wordnet"), Path("/usr/local/share/wordnet"))
_WORD = re.compile(r"^(\W*)([A-Za-z][A-Za-z'-]*)(\W*)$")


class SynonymSource(Protocol):
    """Maps a lower-case word to candidate replacements (possibly none)."""

    def synonyms(self, word: str) -> list[str]: ...


# ----------------------------------------------------------------------------- synonym sources


def find_wordnet(root: str | Path | None = None) -> Path | None:
    """The folder holding WordNet's data.noun/.verb/.adj/.adv files, or None when not installed."""
    candidates = [Path(root)] if root else list(WORDNET_DIRS)
    for folder in candidates:
        if all((folder / f"data.{pos}").is_file() for pos in ("noun", "verb", "adj", "adv")):
            return folder
    return None


@lru_cache(maxsize=4)
def _wordnet_table(folder: str) -> dict[str, tuple[str, ...]]:
    """lemma → the other lemmas of every synset it belongs to (parsed once per folder)."""
    table: dict[str, set[str]] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        with (Path(folder) / f"data.{pos}").open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(" "):  # licence header
                    continue
                fields = line.split(" ", 5)
                if len(fields) < 5:
                    continue
                count = int(fields[3], 16)
                rest = line.split(" ")[4 : 4 + 2 * count : 2]
                lemmas = [w.split("(")[0].replace("_", " ").lower() for w in rest]
                single = [w for w in lemmas if " " not in w]
                for w in single:
                    table.setdefault(w, set()).update(x for x in single if x != w)
    return {w: tuple(sorted(s)) for w, s in table.items() if s}


class WordNetSynonyms:
    """Synonyms from WordNet's database files (Miller 1995): lemmas sharing a synset."""

    def __init__(self, root: str | Path | None = None) -> None:
        folder = find_wordnet(root)
        if folder is None:
            where = str(root) if root else ", ".join(str(p) for p in WORDNET_DIRS)
            raise UserError(
                f"WordNet data not found in {where}; install it (Debian: apt-get install wordnet-base) "
                "or use synonyms from the encoder's embeddings (source: embedding)"
            )
        self.folder = folder
        self.table = _wordnet_table(str(folder))

    def synonyms(self, word: str) -> list[str]:
        return list(self.table.get(word.lower(), ()))


class EmbeddingNeighbours:
    """Replacements from the nearest whole-word tokens in an encoder's input embedding matrix."""

    def __init__(self, vocab: dict[str, int], embeddings: Tensor, k: int = 5) -> None:
        if embeddings.dim() != 2 or embeddings.shape[0] < len(vocab):
            raise UserError(
                f"token embeddings must be (vocab, D) with at least {len(vocab)} rows; got {tuple(embeddings.shape)}"
            )
        words = [
            (tok, idx) for tok, idx in vocab.items() if tok.isalpha() and not tok.startswith("##")
        ]
        self.words = [w for w, _ in words]
        self.index = {w: i for i, w in enumerate(self.words)}
        ids = torch.tensor([i for _, i in words], dtype=torch.long)
        self.emb = torch.nn.functional.normalize(embeddings.detach().float().cpu()[ids], dim=1)
        self.k = k
        self._cache: dict[str, list[str]] = {}

    def synonyms(self, word: str) -> list[str]:
        word = word.lower()
        if word in self._cache:
            return self._cache[word]
        row = self.index.get(word)
        out: list[str] = []
        if row is not None:
            sims = self.emb @ self.emb[row]
            sims[row] = -2.0
            top = torch.topk(sims, min(self.k, len(self.words) - 1)).indices.tolist()
            out = [self.words[i] for i in top]
        self._cache[word] = out
        return out


# ----------------------------------------------------------------------------- operations


def span_crop(words: list[str], rng: np.random.Generator, min_ratio: float = 0.6, max_ratio: float = 1.0) -> list[str]:
    """A random contiguous span holding a fraction in [min_ratio, max_ratio] of the words."""
    n = len(words)
    if n <= 1:
        return list(words)
    ratio = rng.uniform(min_ratio, max_ratio)
    length = max(1, min(n, math.ceil(ratio * n)))
    start = int(rng.integers(0, n - length + 1))
    return words[start : start + length]


def word_deletion(words: list[str], rng: np.random.Generator, p: float = 0.1) -> list[str]:
    """Drop each word with probability p (one random word survives if all would go)."""
    if len(words) <= 1:
        return list(words)
    keep = rng.random(len(words)) >= p
    if not keep.any():
        keep[int(rng.integers(0, len(words)))] = True
    return [w for w, k in zip(words, keep, strict=True) if k]


def word_swap(words: list[str], rng: np.random.Generator, n: int = 1) -> list[str]:
    """Swap n random pairs of word positions."""
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(n):
        i, j = rng.choice(len(out), size=2, replace=False)
        out[i], out[j] = out[j], out[i]
    return out


def synonym_replacement(
    words: list[str], rng: np.random.Generator, source: SynonymSource, p: float = 0.1
) -> list[str]:
    """Replace each word with probability p by a random synonym (punctuation and case kept)."""
    out = list(words)
    for i, token in enumerate(words):
        if rng.random() >= p:
            continue
        m = _WORD.match(token)
        if m is None:
            continue
        lead, word, trail = m.groups()
        options = source.synonyms(word.lower())
        if not options:
            continue
        choice = options[int(rng.integers(0, len(options)))]
        if word[:1].isupper():
            choice = choice[:1].upper() + choice[1:]
        out[i] = f"{lead}{choice}{trail}"
    return out


# ----------------------------------------------------------------------------- pipeline

AUGMENTATIONS: tuple[str, ...] = ("span_crop", "word_deletion", "word_swap", "synonym_replacement")
_PARAMS: dict[str, tuple[str, ...]] = {
    "span_crop": ("min_ratio", "max_ratio", "p"),
    "word_deletion": ("p",),
    "word_swap": ("n", "p"),
    "synonym_replacement": ("p", "source", "k"),
}


class TextAugmentation:
    """A list of operations applied in order to each sentence; ``p`` on span_crop / word_swap is
    the probability of applying that operation (default 1)."""

    def __init__(self, ops: Sequence[tuple[str, Callable[[list[str], np.random.Generator], list[str]], float]]) -> None:
        self.ops = list(ops)

    def __call__(self, texts: Sequence[str], rng: np.random.Generator) -> list[str]:
        out = []
        for text in texts:
            words = text.split()
            for _name, fn, prob in self.ops:
                if prob >= 1.0 or rng.random() < prob:
                    words = fn(words, rng)
            out.append(" ".join(words) if words else text)
        return out

    def __repr__(self) -> str:
        return f"TextAugmentation({[name for name, _, _ in self.ops]})"


def _num(op: str, key: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise UserError(f"text augmentation {op}: {key} must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def build_text_augmentation(
    spec: Sequence[dict[str, Any]],
    *,
    embedding_synonyms: Callable[[int], SynonymSource] | None = None,
) -> TextAugmentation:
    """Build from a recipe list such as ``[{name: word_deletion, p: 0.1}, {name: span_crop}]``.

    ``synonym_replacement`` takes ``source: wordnet | embedding | auto`` (auto: WordNet where
    installed, else the encoder's token embeddings through ``embedding_synonyms(k)``; ``k``
    neighbours per word).
    """
    ops: list[tuple[str, Callable[[list[str], np.random.Generator], list[str]], float]] = []
    for item in spec:
        if not isinstance(item, dict) or "name" not in item:
            raise UserError(f"each text augmentation must be a mapping with a name, got {item!r}")
        name = str(item["name"])
        check_choice("text augmentation", name, AUGMENTATIONS)
        unknown = sorted(set(item) - {"name", *_PARAMS[name]})
        if unknown:
            raise UserError(
                f"text augmentation {name}: unknown option(s) {unknown}; allowed: {', '.join(_PARAMS[name])}"
            )
        prob = 1.0
        if name == "span_crop":
            lo = _num(name, "min_ratio", item.get("min_ratio", 0.6), 0.0, 1.0)
            hi = _num(name, "max_ratio", item.get("max_ratio", 1.0), 0.0, 1.0)
            if lo > hi:
                raise UserError(f"text augmentation span_crop: min_ratio {lo} > max_ratio {hi}")
            prob = _num(name, "p", item.get("p", 1.0), 0.0, 1.0)
            ops.append((name, partial(span_crop, min_ratio=lo, max_ratio=hi), prob))
        elif name == "word_deletion":
            p = _num(name, "p", item.get("p", 0.1), 0.0, 1.0)
            ops.append((name, partial(word_deletion, p=p), 1.0))
        elif name == "word_swap":
            n = int(_num(name, "n", item.get("n", 1), 0, 100))
            prob = _num(name, "p", item.get("p", 1.0), 0.0, 1.0)
            ops.append((name, partial(word_swap, n=n), prob))
        else:
            p = _num(name, "p", item.get("p", 0.1), 0.0, 1.0)
            source_name = str(item.get("source", "auto"))
            check_choice("synonym source", source_name, ("auto", "wordnet", "embedding"))
            source: SynonymSource
            if source_name == "wordnet" or (source_name == "auto" and find_wordnet() is not None):
                source = WordNetSynonyms()
            elif embedding_synonyms is None:
                raise UserError(
                    "synonym_replacement: WordNet is not installed and no encoder embeddings are "
                    "available; install wordnet-base or set source: wordnet / embedding with a text encoder"
                )
            else:
                source = embedding_synonyms(int(_num(name, "k", item.get("k", 5), 1, 1000)))
            ops.append((name, partial(synonym_replacement, source=source, p=p), 1.0))
    return TextAugmentation(ops)
