"""Skip-gram with negative sampling as a compiled CPU kernel (numba): word2vec's own update, pair
by pair, on ranges of corpus positions, in several threads at once without locks (Hogwild, as
word2vec.c and gensim train).

For every kept centre position i of the ranges and every context j among the ``reach`` nearest
kept tokens on either side of it in its sentence (``reach`` drawn from 1..window per centre, or
the whole window), in word2vec's order (left, farthest first, then right, nearest first): the
centre's input vector v and the output vectors u of the context (label 1) and of K noise tokens
drawn from the noise distribution q ∝ count^0.75 (label 0; a draw equal to the context is
skipped, as in word2vec.c) take one SGD step on the pair's loss −log σ(v·u_ctx) − Σ log
σ(−v·u_neg): each output vector is updated as soon as its term is computed, the input vector
after the pair's last term. No vector is stale: the next pair sees every update before it.

As in word2vec.c, σ and log σ are read from tables of :data:`SIGMOID_BINS` bins over
[−:data:`MAX_LOGIT`, :data:`MAX_LOGIT`] (each bin holding the value at its centre); beyond them
σ is 0 or 1: a well-classified term (σ within 0.25 % of its label) changes nothing and is
skipped, a wrong one takes the full gradient. Noise tokens are drawn in O(1) from Walker's alias
table of q (two arrays of the vocabulary's size, which stay in the cache, unlike word2vec's
table of 10^8 draws). The loss is summed per term from the same tables (beyond them: 0, or |f|).

Randomness is counter-based (SplitMix64): whether position i is kept is a hash of (seed, epoch,
i); centre i's window and its negatives come from a stream that starts at a hash of (seed,
epoch, i). So the draws do not depend on the ranges, the threads or the order of the work: a
position trains the same pairs with the same noise whatever else its step trains, and a run
resumed at any step boundary is bit-exact in one thread (which trains a step's ranges in
order). With several threads, the calling thread and helper threads take a step's jobs (its
ranges cut into :data:`JOBS_PER_THREAD` per thread) from one queue and train them at once on
shared vectors: the same pairs with the same draws and the same expected update, but the
interleaving of the threads' writes (and so the last bits of the vectors) differs from run to
run — as with word2vec.c and gensim.

numba is optional (``pip install 'contrastkit[text]'``): :func:`available` says whether it is
importable; without it the sequences task trains with the PyTorch path.
"""

from __future__ import annotations

import os
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

numba: Any
try:  # optional: the sequences task falls back to its PyTorch path without it
    import numba
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - exercised where numba is not installed
    numba = None

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64's increment
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
KEEP, DRAWS = 0, 1  # the purposes of an epoch's two keys
JOBS_PER_THREAD = 2  # a step's work is cut into this many jobs per thread
MAX_LOGIT = 6.0  # word2vec.c's MAX_EXP
SIGMOID_BINS = 1024


def available() -> bool:
    """Whether numba is installed (the kernel compiles on first use, then loads from numba's cache)."""
    return numba is not None


# ----------------------------------------------------------------------------- the random numbers and tables, in Python


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
    """A 64-bit random ``x`` mapped to 0..n-1 (its top 32 bits, multiplied and shifted)."""
    return ((x >> 32) * n) >> 32


def uniform(x: int) -> float:
    """A 64-bit random ``x`` as a float in [0, 1) (its top 53 bits)."""
    return (x >> 11) * 2.0**-53


def coin(x: int) -> float:
    """The low 24 bits of a 64-bit random ``x`` as a float in [0, 1) (the alias table's second draw)."""
    return (x & 0xFFFFFF) * 2.0**-24


def alias_table(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table of the distribution ``q`` (Vose's construction): draw i uniformly
    from 0..V-1, keep it with probability ``accept[i]``, else take ``alias[i]``. Exact: entry j
    is drawn with probability (accept[j] + Σ_{i: alias[i]=j} (1 − accept[i])) / V = q[j]."""
    scaled = np.asarray(q, dtype=np.float64) * q.size / q.sum()
    accept, alias = np.ones(q.size), np.arange(q.size, dtype=np.int32)
    (_vose if numba is not None else _vose_python)(scaled, accept, alias)
    return accept.astype(np.float32), alias


def _vose_python(scaled: np.ndarray, accept: np.ndarray, alias: np.ndarray) -> None:
    small = [i for i in range(scaled.size) if scaled[i] < 1.0]
    large = [i for i in range(scaled.size) if scaled[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        accept[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        (small if scaled[g] < 1.0 else large).append(g)
    # what is left keeps accept 1 (its scaled weight is 1 up to rounding)


def sigmoid_tables() -> tuple[np.ndarray, np.ndarray]:
    """σ and log σ at the centres of the :data:`SIGMOID_BINS` bins over [−MAX_LOGIT, MAX_LOGIT]."""
    centres = -MAX_LOGIT + (np.arange(SIGMOID_BINS) + 0.5) * (2 * MAX_LOGIT / SIGMOID_BINS)
    return 1.0 / (1.0 + np.exp(-centres)), -np.log1p(np.exp(-centres))


def sigmoid_bin(f: float) -> int:
    """The table bin of a logit f with |f| < MAX_LOGIT."""
    return min(int((f + MAX_LOGIT) * (SIGMOID_BINS / (2 * MAX_LOGIT))), SIGMOID_BINS - 1)


# ----------------------------------------------------------------------------- the kernel


if numba is not None:
    _u64 = np.uint64
    _GOLDEN, _MIX1, _MIX2 = _u64(GOLDEN), _u64(MIX1), _u64(MIX2)
    _S11, _S27, _S30, _S31, _S32, _LOW24 = _u64(11), _u64(27), _u64(30), _u64(31), _u64(32), _u64(0xFFFFFF)
    _SCALE = SIGMOID_BINS / (2 * MAX_LOGIT)

    @njit(cache=True)
    def _vose(scaled: Any, accept: Any, alias: Any) -> None:
        """:func:`_vose_python`, compiled (a vocabulary of millions takes milliseconds)."""
        n = scaled.size
        small, large = np.empty(n, np.int64), np.empty(n, np.int64)
        ns = nl = 0
        for i in range(n):
            if scaled[i] < 1.0:
                small[ns] = i
                ns += 1
            else:
                large[nl] = i
                nl += 1
        while ns > 0 and nl > 0:
            ns -= 1
            nl -= 1
            s, g = small[ns], large[nl]
            accept[s], alias[s] = scaled[s], g
            scaled[g] -= 1.0 - scaled[s]
            if scaled[g] < 1.0:
                small[ns] = g
                ns += 1
            else:
                large[nl] = g
                nl += 1

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

    def _prefetch_line(typingctx: Any, arr: Any, row: Any, col: Any) -> Any:
        """Ask for the cache line of ``arr[row, col]`` ahead of its use (``llvm.prefetch``: a read,
        kept in every cache level; a no-op where the target has no such instruction)."""
        signature = types.void(arr, row, col)

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            array_type = sig.args[0]
            array = context.make_array(array_type)(context, builder, args[0])
            index = [context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], sig.args[1:], strict=True)]
            pointer = cgutils.get_item_pointer2(
                context, builder, data=array.data, shape=cgutils.unpack_tuple(builder, array.shape),
                strides=cgutils.unpack_tuple(builder, array.strides), layout=array_type.layout, inds=index)
            i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            prefetch = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                                      "llvm.prefetch")
            builder.call(prefetch, [builder.bitcast(pointer, i8p), i32(0), i32(3), i32(1)])
            return context.get_dummy_value()

        return signature, codegen

    _prefetch: Any = intrinsic(_prefetch_line)

    @njit(inline="always")
    def _prefetch_row(arr: Any, row: Any) -> None:
        for col in range(0, arr.shape[1], max(64 // arr.itemsize, 1)):
            _prefetch(arr, row, col)

    @njit(inline="always", fastmath=True)
    def _pair(w_in: Any, w_out: Any, centre: Any, context: Any, noise: Any, sigmoid: Any, log_sigmoid: Any, lr: float,
              grad: Any, g_typed: Any) -> float:
        """One (centre, context) pair's SGD step with its noise tokens; its loss."""
        dim = w_in.shape[1]
        for k in range(dim):
            grad[k] = 0
        loss = 0.0
        for d in range(noise.shape[0] + 1):
            if d == 0:
                target, label = context, 1.0
            else:
                target, label = noise[d - 1], 0.0
                if target == context:
                    continue
            f = w_in[centre, 0] * w_out[target, 0]
            for k in range(1, dim):
                f += w_in[centre, k] * w_out[target, k]
            if f >= MAX_LOGIT:  # σ = 1
                if label == 1.0:
                    continue
                loss += f
                g = -lr
            elif f <= -MAX_LOGIT:  # σ = 0
                if label == 0.0:
                    continue
                loss -= f
                g = lr
            else:
                b: Any = min(np.int64((f + MAX_LOGIT) * _SCALE), SIGMOID_BINS - 1)
                loss -= log_sigmoid[b] if label == 1.0 else log_sigmoid[SIGMOID_BINS - 1 - b]  # log σ(−f): the mirror bin
                g = (label - sigmoid[b]) * lr
            g_typed[0] = g  # in the weights' precision
            gw = g_typed[0]
            for k in range(dim):
                grad[k] += gw * w_out[target, k]
            for k in range(dim):
                w_out[target, k] += gw * w_in[centre, k]
        for k in range(dim):
            w_in[centre, k] += grad[k]
        return loss

    @njit(nogil=True, fastmath=True, cache=True)
    def _train_ranges(w_in: Any, w_out: Any, tokens: Any, offsets: Any, keep: Any, accept: Any, alias: Any,
                      sigmoid: Any, log_sigmoid: Any, ranges: Any, window: int, dynamic: bool, lr: float, keep_key: Any,
                      draw_key: Any, grad: Any, gt: Any, near: Any, ctx: Any, neg: Any) -> Any:
        """Train the centres of ``ranges`` in order, without the GIL; (loss, pairs)."""
        negatives = neg.shape[1]
        loss, pairs = 0.0, 0
        for r in range(ranges.shape[0]):
            a, b = ranges[r, 0], ranges[r, 1]
            s = np.searchsorted(offsets, a, side="right") - 1  # the sentence of position a
            for i in range(a, b):
                while offsets[s + 1] <= i:
                    s += 1
                if not _kept(tokens, keep, keep_key, i):
                    continue
                centre = tokens[i]
                _prefetch_row(w_in, centre)
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
                count = left + right
                for q in range(count):  # the pairs in word2vec's order (left: farthest first), their noise drawn in turn
                    ctx[q] = tokens[near[left - 1 - q] if q < left else near[q]]
                    for d in range(negatives):
                        state = state + _GOLDEN
                        x = _mix(state)
                        t = _below(x, accept.shape[0])
                        if np.float32(x & _LOW24) * np.float32(5.9604644775390625e-08) >= accept[t]:
                            t = alias[t]
                        neg[q, d] = t
                for q in range(count):
                    if q + 1 < count:  # the next pair's output vectors, while this one trains
                        _prefetch_row(w_out, ctx[q + 1])
                        for d in range(negatives):
                            _prefetch_row(w_out, neg[q + 1, d])
                    loss += _pair(w_in, w_out, centre, ctx[q], neg[q], sigmoid, log_sigmoid, lr, grad, gt)
                pairs += count
        return loss, pairs


def split_ranges(ranges: np.ndarray, parts: int) -> list[np.ndarray]:
    """``ranges`` ((R, 2) [start, end) positions) cut into at most ``parts`` jobs of about as many
    positions each, in order (a range may be cut between two jobs); empty jobs left out."""
    lengths = (ranges[:, 1] - ranges[:, 0]).tolist()
    total = sum(lengths)
    bounds = [(k * total) // parts for k in range(parts + 1)]
    jobs = []
    for k in range(parts):
        pieces, before = [], 0
        for (a, _), n in zip(ranges.tolist(), lengths, strict=True):
            lo, hi = max(bounds[k] - before, 0), min(bounds[k + 1] - before, n)
            if lo < hi:
                pieces.append((a + lo, a + hi))
            before += n
        if pieces:
            jobs.append(np.array(pieces, dtype=np.int64))
    return jobs


class _Pool:
    """Helper threads that train jobs from one queue, first in first out, each with scratch
    buffers of its own, and the tally of what every thread trained."""

    def __init__(self, helpers: int, scratch: Callable[[], tuple[np.ndarray, ...]]) -> None:
        self.queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self.lock = threading.Lock()
        self.loss, self.pairs = 0.0, 0
        self.jobs = [0] * (helpers + 1)  # jobs trained by the calling thread (0) and by each helper
        self.error: BaseException | None = None
        self.threads = [threading.Thread(target=self._work, args=(who, scratch()), name=f"contrastkit-skipgram-{who}",
                                         daemon=True) for who in range(1, helpers + 1)]
        for thread in self.threads:
            thread.start()

    def run(self, job: tuple[Any, ...], who: int, buffers: tuple[np.ndarray, ...]) -> None:
        try:
            loss, pairs = _train_ranges(*job, *buffers)  # without the GIL
        except BaseException as exc:  # pragma: no cover - a bug; raised again in the caller's thread
            self.error = exc
            return
        with self.lock:
            self.loss, self.pairs = self.loss + loss, self.pairs + pairs
            self.jobs[who] += 1

    def _work(self, who: int, buffers: tuple[np.ndarray, ...]) -> None:
        while True:
            job = self.queue.get()
            try:
                if job is None:
                    return
                self.run(job, who, buffers)
            finally:
                self.queue.task_done()

    def help(self, buffers: tuple[np.ndarray, ...], backlog: int) -> None:
        """Train queued jobs in the calling thread until at most ``backlog`` of them wait."""
        while self.queue.qsize() > backlog:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            try:
                if job is not None:
                    self.run(job, 0, buffers)
            finally:
                self.queue.task_done()
        self.check()

    def drain(self, buffers: tuple[np.ndarray, ...]) -> None:
        """Train what waits, then wait for the helpers' last jobs."""
        self.help(buffers, 0)
        self.queue.join()
        self.check()

    def take(self) -> tuple[float, int]:
        """The loss and pairs of the jobs finished since the last call."""
        with self.lock:
            out, self.loss, self.pairs = (self.loss, self.pairs), 0.0, 0
        return out

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError("the skip-gram kernel failed in a helper thread") from self.error

    def stop(self) -> None:
        for _ in self.threads:
            self.queue.put(None)


class SkipGramKernel:
    """The kernel bound to one pair of weight arrays (input and output vectors, (V, D), float32
    or float64, updated in place), the corpus' keep probabilities of subsampling and its noise
    distribution, and the skip-gram's window and negatives. :meth:`train` trains on ranges of
    positions and returns when they are done; :meth:`submit` returns as soon as no more than one
    job per helper thread is left (:meth:`drain` waits for them).

    Threads: the calling thread and ``threads − 1`` helpers take the jobs of a step
    (:data:`JOBS_PER_THREAD` per thread) from one queue, first in first out. The caller never
    waits for a helper that has not started: on a busy machine a helper that the system has put
    to sleep costs no more than its own share (a barrier at each step instead waits for the
    slowest thread, and measured 0.3× one thread on two busy cores)."""

    def __init__(self, w_in: np.ndarray, w_out: np.ndarray, *, keep: np.ndarray, noise: np.ndarray,
                 window: int, negatives: int, dynamic_window: bool = True) -> None:
        if numba is None:
            raise RuntimeError("the skip-gram kernel needs numba: pip install 'contrastkit[text]'")
        if w_in.dtype != w_out.dtype or w_in.shape != w_out.shape or w_in.dtype not in (np.float32, np.float64):
            raise ValueError(f"input and output vectors must be two (V, D) float32 / float64 arrays; got {w_in.dtype} "
                             f"{w_in.shape} and {w_out.dtype} {w_out.shape}")
        if not (w_in.flags.c_contiguous and w_out.flags.c_contiguous):
            raise ValueError("input and output vectors must be C-contiguous (they are updated in place)")
        self.w_in, self.w_out = w_in, w_out
        self.keep = np.ascontiguousarray(keep, dtype=np.float64)
        self.accept, self.alias = alias_table(np.asarray(noise, dtype=np.float64))
        self.sigmoid, self.log_sigmoid = sigmoid_tables()
        self.window, self.negatives, self.dynamic = int(window), int(negatives), bool(dynamic_window)
        self._own = self._scratch()
        self._pool: _Pool | None = None

    def _scratch(self) -> tuple[np.ndarray, ...]:
        """One thread's buffers: the input vector's gradient, the step size in the weights' precision,
        a centre's context positions, its pairs' contexts and their noise tokens."""
        dim, dtype, pairs = self.w_in.shape[1], self.w_in.dtype, 2 * self.window
        return (np.zeros(dim, dtype), np.zeros(1, dtype), np.zeros(pairs, np.int64), np.zeros(pairs, np.int64),
                np.zeros((pairs, self.negatives), np.int64))

    @staticmethod
    def threads(wanted: int) -> int:
        """The threads a step runs in: ``wanted``, at most the CPUs this process may use."""
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(int(wanted), cpus))

    def _job(self, tokens: np.ndarray, offsets: np.ndarray, ranges: np.ndarray, lr: float, seed: int,
             epoch: int) -> tuple[Any, ...]:
        return (self.w_in, self.w_out, tokens, offsets, self.keep, self.accept, self.alias, self.sigmoid, self.log_sigmoid,
                np.ascontiguousarray(ranges, dtype=np.int64), self.window, self.dynamic, float(lr),
                np.uint64(stream_key(seed, epoch, KEEP)), np.uint64(stream_key(seed, epoch, DRAWS)))

    def submit(self, tokens: np.ndarray, offsets: np.ndarray, ranges: np.ndarray, *, lr: float, seed: int, epoch: int,
               threads: int = 1) -> tuple[float, int]:
        """Train on the centres at the positions of ``ranges`` ((R, 2) int64: [start, end) each,
        trained in this order in one thread) of ``tokens`` (int32; sentence s is
        ``tokens[offsets[s]:offsets[s + 1]]``; contexts may lie outside the ranges, in the same
        sentence) with learning rate ``lr``, in ``threads`` threads. In one thread: done on return;
        in several: at most one job per helper may still wait or run. Returns the (summed loss,
        pairs) of the jobs finished since the last call."""
        threads = self.threads(threads)
        if threads == 1:
            loss, pairs = _train_ranges(*self._job(tokens, offsets, ranges, lr, seed, epoch), *self._own)
            if self._pool is None:
                return loss, pairs
            self._pool.drain(self._own)  # a run that went down to one thread: what the helpers had left first
            late_loss, late_pairs = self._pool.take()
            return loss + late_loss, pairs + late_pairs
        if self._pool is None or len(self._pool.threads) != threads - 1:
            if self._pool is not None:
                self._pool.drain(self._own)
                self._pool.stop()
            self._pool = _Pool(threads - 1, self._scratch)
            weakref.finalize(self, self._pool.stop)  # the helpers end with the kernel
        for part in split_ranges(ranges, JOBS_PER_THREAD * threads):
            self._pool.queue.put(self._job(tokens, offsets, part, lr, seed, epoch))
        self._pool.help(self._own, backlog=threads - 1)
        return self._pool.take()

    def drain(self) -> tuple[float, int]:
        """Wait for every submitted job (before the vectors are read or saved); the (loss, pairs)
        of the jobs finished since the last :meth:`submit`."""
        if self._pool is None:
            return 0.0, 0
        self._pool.drain(self._own)
        return self._pool.take()

    def train(self, tokens: np.ndarray, offsets: np.ndarray, ranges: np.ndarray, *, lr: float, seed: int, epoch: int,
              threads: int = 1) -> tuple[float, int]:
        """:meth:`submit`, then :meth:`drain`: the (summed loss, pairs) of these ranges, done."""
        loss, pairs = self.submit(tokens, offsets, ranges, lr=lr, seed=seed, epoch=epoch, threads=threads)
        late_loss, late_pairs = self.drain()
        return loss + late_loss, pairs + late_pairs
