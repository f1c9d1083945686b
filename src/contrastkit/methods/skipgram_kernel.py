"""Skip-gram with negative sampling as a compiled CPU kernel (numba): word2vec's own update, pair
by pair, on a block of corpus positions, in several threads at once without locks (Hogwild, as
word2vec.c and gensim train).

For every kept centre position i of the block and every context j among the ``reach`` nearest
kept tokens on either side of it in its sentence (``reach`` drawn from 1..window per centre, or
the whole window), in word2vec's order (left, farthest first, then right, nearest first): the
centre's input vector v and the output vectors u of the context (label 1) and of K noise tokens
drawn from the unigram^0.75 table (label 0; a draw equal to the context is skipped, as in
word2vec.c) take one SGD step on the pair's loss −log σ(v·u_ctx) − Σ log σ(−v·u_neg): each output
vector is updated as soon as its term is computed, the input vector after the pair's last term.
No vector is stale: the next pair sees every update before it. The learning rate is the step's.

Randomness is counter-based (SplitMix64): whether position i is kept is a hash of (seed, epoch,
i); centre i's window and its negatives come from a stream that starts at a hash of (seed,
epoch, i). So the draws do not depend on the blocks, the threads or the order of the work: one
thread gives the same vectors whatever the block size, and a run resumed at any step boundary
is bit-exact in one thread. With several threads the positions of a block are cut into one
contiguous chunk per thread and the chunks run at once on shared vectors: the same draws, the
same expected update, but the interleaving of the threads' writes (and so the last bits of
the vectors) differs from run to run — as with word2vec.c and gensim.

numba is optional (``pip install 'contrastkit[text]'``): :func:`available` says whether it is
importable; without it the sequences task trains with the PyTorch path.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

numba: Any
try:  # optional: the sequences task falls back to its PyTorch path without it
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised where numba is not installed
    numba = None

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64's increment
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
KEEP, DRAWS = 0, 1  # the purposes of an epoch's two keys


def available() -> bool:
    """Whether numba is installed (the kernel compiles on first use, then loads from numba's cache)."""
    return numba is not None


# ----------------------------------------------------------------------------- the random numbers, in Python


def mix(z: int) -> int:
    """SplitMix64's finaliser: a 64-bit hash of a 64-bit integer."""
    z &= MASK
    z = ((z ^ (z >> 30)) * MIX1) & MASK
    z = ((z ^ (z >> 27)) * MIX2) & MASK
    return z ^ (z >> 31)


def stream_key(seed: int, epoch: int, purpose: int) -> int:
    """The key of one epoch's draws of one purpose (:data:`KEEP`, :data:`DRAWS`)."""
    z = mix(seed & MASK)
    for part in (epoch, purpose):
        z = mix(z + GOLDEN * (part + 1))
    return z


def below(x: int, n: int) -> int:
    """A 64-bit random ``x`` mapped to 0..n-1 (the top 32 bits, multiplied and shifted)."""
    return ((x >> 32) * n) >> 32


def uniform(x: int) -> float:
    """A 64-bit random ``x`` as a float in [0, 1) (its top 53 bits)."""
    return (x >> 11) * 2.0**-53


# ----------------------------------------------------------------------------- the kernel


if numba is not None:
    _u64 = np.uint64
    _GOLDEN, _MIX1, _MIX2 = _u64(GOLDEN), _u64(MIX1), _u64(MIX2)
    _S11, _S27, _S30, _S31, _S32 = _u64(11), _u64(27), _u64(30), _u64(31), _u64(32)

    @njit(inline="always")
    def _mix(z: Any) -> Any:
        z = (z ^ (z >> _S30)) * _MIX1
        z = (z ^ (z >> _S27)) * _MIX2
        return z ^ (z >> _S31)

    @njit(inline="always")
    def _below(x: Any, n: Any) -> Any:
        return np.int64(((x >> _S32) * _u64(n)) >> _S32)

    @njit(inline="always")
    def _kept(tokens: Any, keep: Any, key: Any, i: Any) -> Any:
        p = keep[tokens[i]]
        return p >= 1.0 or np.float64(_mix(key + _u64(i) * _GOLDEN) >> _S11) * 1.1102230246251565e-16 < p

    @njit(inline="always", fastmath=True)
    def _pair(w_in: Any, w_out: Any, centre: Any, context: Any, state: Any, negatives: Any, table: Any,
              lr: float, grad: Any, g_typed: Any) -> Any:
        """One (centre, context) pair's SGD step with its K negatives; (loss, stream state)."""
        dim = w_in.shape[1]
        for k in range(dim):
            grad[k] = 0
        loss = 0.0
        for d in range(negatives + 1):
            if d == 0:
                target, label = context, 1.0
            else:
                state = state + _GOLDEN
                target = table[_below(_mix(state), table.shape[0])]
                if target == context:
                    continue
                label = 0.0
            f = w_in[centre, 0] * w_out[target, 0]
            for k in range(1, dim):
                f += w_in[centre, k] * w_out[target, k]
            f64 = np.float64(f)
            e = math.exp(-abs(f64))
            sig = 1.0 / (1.0 + e) if f64 >= 0 else e / (1.0 + e)
            # −log σ(f) for the context, −log σ(−f) for a noise token: softplus(∓f)
            loss += math.log1p(e) + (max(-f64, 0.0) if label == 1.0 else max(f64, 0.0))
            g_typed[0] = (label - sig) * lr
            g = g_typed[0]
            for k in range(dim):
                grad[k] += g * w_out[target, k]
            for k in range(dim):
                w_out[target, k] += g * w_in[centre, k]
        for k in range(dim):
            w_in[centre, k] += grad[k]
        return loss, state

    @njit(parallel=True, nogil=True, fastmath=True, cache=True)
    def _train_block(w_in: Any, w_out: Any, tokens: Any, offsets: Any, keep: Any, table: Any, lo: int, hi: int,
                     window: int, dynamic: bool, negatives: int, lr: float, keep_key: Any, draw_key: Any,
                     grads: Any, g_typed: Any, found: Any, out: Any) -> None:
        chunks = out.shape[0]
        n = hi - lo
        for c in prange(chunks):
            a, b = lo + (n * c) // chunks, lo + (n * (c + 1)) // chunks
            grad, gt, near = grads[c], g_typed[c], found[c]
            loss, pairs = 0.0, 0
            s = np.searchsorted(offsets, a, side="right") - 1  # the sentence of position a
            for i in range(a, b):
                while offsets[s + 1] <= i:
                    s += 1
                if not _kept(tokens, keep, keep_key, i):
                    continue
                state = _mix(draw_key + _u64(i) * _GOLDEN)
                reach = window
                if dynamic:
                    state = state + _GOLDEN
                    reach = 1 + _below(_mix(state), window)
                first, last = offsets[s], offsets[s + 1]
                left = 0  # the reach nearest kept tokens before i (nearest first), then after it
                j = i - 1
                while left < reach and j >= first:
                    if _kept(tokens, keep, keep_key, j):
                        near[left] = j
                        left += 1
                    j -= 1
                right = 0
                j = i + 1
                while right < reach and j < last:
                    if _kept(tokens, keep, keep_key, j):
                        near[left + right] = j
                        right += 1
                    j += 1
                centre = tokens[i]
                for q in range(left + right):
                    at = near[left - 1 - q] if q < left else near[q]  # left: farthest first
                    add, state = _pair(w_in, w_out, centre, tokens[at], state, negatives, table, lr, grad, gt)
                    loss += add
                pairs += left + right
            out[c, 0] = loss
            out[c, 1] = pairs


class SkipGramKernel:
    """The kernel bound to one pair of weight arrays (input and output vectors, (V, D), float32
    or float64, updated in place), the corpus' keep probabilities and noise table, and the
    skip-gram's window and negatives. :meth:`train` runs one block of positions."""

    def __init__(self, w_in: np.ndarray, w_out: np.ndarray, *, keep: np.ndarray, table: np.ndarray,
                 window: int, negatives: int, dynamic_window: bool = True) -> None:
        if w_in.dtype != w_out.dtype or w_in.shape != w_out.shape or w_in.dtype not in (np.float32, np.float64):
            raise ValueError(f"input and output vectors must be two (V, D) float32 / float64 arrays; got {w_in.dtype} "
                             f"{w_in.shape} and {w_out.dtype} {w_out.shape}")
        self.w_in, self.w_out = w_in, w_out
        self.keep = np.ascontiguousarray(keep, dtype=np.float64)
        self.table = np.ascontiguousarray(table, dtype=np.int32)
        self.window, self.negatives, self.dynamic = int(window), int(negatives), bool(dynamic_window)
        self._scratch: dict[int, tuple[np.ndarray, ...]] = {}

    def _buffers(self, chunks: int) -> tuple[np.ndarray, ...]:
        if chunks not in self._scratch:
            dim, dtype = self.w_in.shape[1], self.w_in.dtype
            self._scratch[chunks] = (np.zeros((chunks, dim), dtype), np.zeros((chunks, 1), dtype),
                                     np.zeros((chunks, 2 * self.window), np.int64), np.zeros((chunks, 2)))
        return self._scratch[chunks]

    def train(self, tokens: np.ndarray, offsets: np.ndarray, lo: int, hi: int, *, lr: float, seed: int, epoch: int,
              threads: int = 1) -> tuple[float, int]:
        """Train on the centres at positions [lo, hi) of ``tokens`` (int32; sentence s is
        ``tokens[offsets[s]:offsets[s + 1]]``; contexts may lie outside the block, in the same
        sentence) with learning rate ``lr`` in ``threads`` threads; (summed loss, pairs)."""
        if numba is None:
            raise RuntimeError("the skip-gram kernel needs numba: pip install 'contrastkit[text]'")
        threads = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS, max(hi - lo, 1)))
        numba.set_num_threads(threads)
        grads, g_typed, found, out = self._buffers(threads)
        _train_block(self.w_in, self.w_out, tokens, offsets, self.keep, self.table, int(lo), int(hi), self.window, self.dynamic,
               self.negatives, float(lr), np.uint64(stream_key(seed, epoch, KEEP)), np.uint64(stream_key(seed, epoch, DRAWS)),
               grads, g_typed, found, out)
        return float(out[:, 0].sum()), int(out[:, 1].sum())
