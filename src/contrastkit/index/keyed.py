"""Vectors by key — a word of a word2vec run, an item id of an item2vec or recommendation run —
and the questions gensim's ``KeyedVectors`` answers: ``kv["cat"]``, ``"cat" in kv``, ``len(kv)``,
``kv.words`` and ``kv.most_similar(positive=[...], negative=[...], k=10)``, analogies included.

``most_similar`` is gensim's 3CosAdd (Mikolov et al. 2013; Levy & Goldberg 2014): the vectors
are scaled to unit length, the positive keys' unit vectors added and the negative ones
subtracted, the mean scaled to unit length, and every key ranked by the cosine with it, the
query keys left out — "king − man + woman" is ``most_similar(positive=["king", "woman"],
negative=["man"])``. Its answers are those of ``gensim.models.KeyedVectors.most_similar`` on the
same vectors (``contrastkit export --format word2vec`` writes them for gensim).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from contrastkit.errors import UserError


class KeyedVectors:
    """``keys[i]``'s vector is ``matrix[i]`` (float32, (N, D)); ``fold`` maps a query onto the keys'
    form (a run that lowercased its corpus looks up ``"Paris"`` as ``"paris"``); ``what`` names
    the keys in errors ("token", "item"); ``counts``: occurrences of each key in the training data."""

    def __init__(self, keys: Sequence[str], matrix: Tensor | np.ndarray, *, counts: np.ndarray | None = None,
                 fold: Callable[[str], str] | None = None, what: str = "token") -> None:
        vectors = matrix.detach().cpu().numpy() if isinstance(matrix, Tensor) else np.asarray(matrix)
        if vectors.ndim != 2 or vectors.shape[0] != len(keys):
            raise ValueError(f"{len(keys)} keys for vectors of shape {tuple(vectors.shape)}")
        self.words: list[str] = [str(k) for k in keys]
        self.matrix: np.ndarray = np.ascontiguousarray(vectors, dtype=np.float32)
        self.counts = counts
        self.what = what
        self._fold = fold
        self._where = {k: i for i, k in enumerate(self.words)}
        self._unit: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.words)

    def __iter__(self) -> Iterator[str]:
        return iter(self.words)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._key(key) in self._where

    def __getitem__(self, key: str) -> np.ndarray:
        """The vector of ``key`` (a copy, float32 (D,))."""
        return self.matrix[self.index(key)].copy()

    def __repr__(self) -> str:
        return f"KeyedVectors({len(self)} {self.what}s × {self.dim})"

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def _key(self, key: str) -> str:
        return self._fold(key) if self._fold is not None else key

    def index(self, key: str) -> int:
        """The row of ``key``; a one-line error naming it when the run has no such key."""
        found = self._where.get(self._key(key))
        if found is None:
            sample = ", ".join(self.words[:3])
            raise UserError(f"unknown {self.what} {key!r}: not in the run's vocabulary of {len(self)} ({sample}, ...)")
        return found

    def unit(self) -> np.ndarray:
        """Every vector scaled to unit length (float32 (N, D); a zero vector stays zero)."""
        if self._unit is None:
            norms = np.linalg.norm(self.matrix, axis=1, keepdims=True)
            self._unit = (self.matrix / np.where(norms > 0, norms, 1)).astype(np.float32)
        return self._unit

    def most_similar(self, positive: str | Sequence[str] = (), negative: str | Sequence[str] = (),
                     k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` keys closest (cosine) to the mean of the positive keys' unit vectors minus
        the negative ones' (3CosAdd), the query keys left out: [(key, score)], best first."""
        pos = [positive] if isinstance(positive, str) else list(positive)
        neg = [negative] if isinstance(negative, str) else list(negative)
        if not pos and not neg:
            raise UserError("most_similar needs at least one positive or negative " + self.what)
        if k < 1:
            raise UserError(f"k {k} must be at least 1")
        rows = [self.index(w) for w in pos] + [self.index(w) for w in neg]
        unit = torch.from_numpy(self.unit()).double()
        weights = torch.tensor([1.0] * len(pos) + [-1.0] * len(neg), dtype=torch.float64)
        query = torch.nn.functional.normalize((weights[:, None] * unit[rows]).mean(0), dim=0)
        scores = unit @ query
        scores[torch.as_tensor(rows)] = -torch.inf
        top = torch.topk(scores, min(k, len(self) - len(set(rows))))
        return [(self.words[i], float(s)) for i, s in zip(top.indices.tolist(), top.values.tolist(), strict=True)]
