"""The compiled skip-gram kernel: its updates against a naive per-pair reference loop drawing the
same random numbers, blocks that do not change the result, exact resume through the training
loop in one thread, related words becoming neighbours in two threads, and the choice of kernel."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastkit.data.sequences import SkipGramBlocks, TokenCorpus, corpus_from_sentences, noise_distribution
from contrastkit.errors import UserError
from contrastkit.methods.skipgram import SkipGram, SkipGramOptions, kernel_available
from contrastkit.recipes import load_config
from contrastkit.runner import train_run
from contrastkit.runs import checkpoint_part, new_run_dir
from contrastkit.tasks.sequences import choose_kernel
from contrastkit.training import OptimConfig, TrainConfig, load_checkpoint

from ..conftest import InterruptAt, Interrupted
from ..tasks.test_sequences import TOPICS, topic_corpus

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not kernel_available(), reason="numba is not installed (the kernel is optional)")]

def topic_sentences(n: int, seed: int = 0) -> list[list[str]]:
    """Sentences of one topic's words each, with shared function words in between."""
    return topic_corpus(n, seed)


def _model(corpus: TokenCorpus, dim: int, scale: float = 0.3, **options: object) -> SkipGram:
    torch.manual_seed(0)
    model = SkipGram(len(corpus.vocab), embedding_dim=dim, **options).double()  # type: ignore[arg-type]
    with torch.no_grad():  # non-zero output vectors: every term of the update is exercised
        model.output.weight.normal_(0, scale)
        model.input.weight.normal_(0, scale)
    return model


def reference(w_in: np.ndarray, w_out: np.ndarray, blocks: SkipGramBlocks, *, lr: float, seed: int, epoch: int,
              negatives: int, window: int, dynamic: bool, lo: int, hi: int) -> tuple[float, int, int]:
    """word2vec's skip-gram, one pair at a time, written plainly, with the kernel's random draws
    and word2vec.c's σ: the value at the centre of the logit's bin of width 12 / 1024, 0 or 1
    beyond ±6. (loss, pairs, terms beyond ±6)."""
    from contrastkit.methods.skipgram_kernel import (
        DRAWS,
        GOLDEN,
        KEEP,
        MASK,
        alias_table,
        below,
        coin,
        mix,
        stream_key,
        uniform,
    )

    tokens, offsets, keep = blocks.epoch_corpus(epoch), blocks.offsets, blocks.keep.numpy()
    accept, alias = alias_table(blocks.noise.numpy())
    keep_key, draw_key = stream_key(seed, epoch, KEEP), stream_key(seed, epoch, DRAWS)

    def kept(i: int) -> bool:
        p = float(keep[tokens[i]])
        return p >= 1.0 or uniform(mix(keep_key + i * GOLDEN)) < p

    def sigmoid(f: float) -> float:
        if abs(f) >= 6:
            return float(f > 0)
        centre = -6 + (math.floor((f + 6) / (12 / 1024)) + 0.5) * (12 / 1024)
        return 1.0 / (1.0 + math.exp(-centre))

    loss, pairs, clipped = 0.0, 0, 0
    for i in range(lo, hi):
        if not kept(i):
            continue
        sentence = int(np.searchsorted(offsets, i, side="right")) - 1
        first, last = int(offsets[sentence]), int(offsets[sentence + 1])
        state = mix(draw_key + i * GOLDEN)
        reach = window
        if dynamic:  # word2vec's reduced window, 1..window
            state = (state + GOLDEN) & MASK
            reach = 1 + below(mix(state), window)
        left = [j for j in range(i - 1, first - 1, -1) if kept(j)][:reach]
        right = [j for j in range(i + 1, last) if kept(j)][:reach]
        centre = int(tokens[i])
        for j in [*reversed(left), *right]:  # left farthest first, then right nearest first
            context = int(tokens[j])
            grad = np.zeros(w_in.shape[1])
            for d in range(negatives + 1):
                if d == 0:
                    target, label = context, 1.0
                else:
                    state = (state + GOLDEN) & MASK
                    target = below(mix(state), accept.size)
                    if coin(mix(state)) >= accept[target]:
                        target = int(alias[target])
                    if target == context:
                        continue
                    label = 0.0
                f = sum(float(a) * float(b) for a, b in zip(w_in[centre], w_out[target], strict=True))
                clipped += abs(f) >= 6
                sig = sigmoid(f)
                if sig == label:
                    continue  # beyond ±6 and right: nothing to learn
                # −log σ(f) for the context, −log σ(−f) = −log(1 − σ(f)) for a noise token; beyond ±6: |f|
                loss += abs(f) if abs(f) >= 6 else -math.log(sig) if label else -math.log(1.0 - sig)
                g = (label - sig) * lr
                grad += g * w_out[target]
                w_out[target] += g * w_in[centre]
            w_in[centre] += grad
            pairs += 1
    return loss, pairs, clipped


def _blocks(corpus: TokenCorpus, batch_size: int, **options: object) -> SkipGramBlocks:
    return SkipGramBlocks(corpus, batch_size=batch_size, **options)  # type: ignore[arg-type]


def test_splitmix_is_the_published_generator() -> None:
    from contrastkit.methods.skipgram_kernel import GOLDEN, mix

    assert mix(GOLDEN) == 0xE220A8397B1DCDAF  # SplitMix64's first output from state 0
    assert mix((2 * GOLDEN) & ((1 << 64) - 1)) == 0x6E789E6AA1B965F4


@pytest.mark.parametrize("dynamic", [True, False])
def test_the_kernel_is_word2vecs_update_pair_by_pair(dynamic: bool) -> None:
    """One thread, blocks that cut sentences (contexts outside the block): the same vectors, loss
    and pair count as the naive loop with the same draws, subsampling, reduced windows and
    logits beyond ±6 included."""
    rng = random.Random(1)
    words = [f"w{k}" for k in range(12)]
    weights = [1.0 / (k + 1) for k in range(12)]  # Zipf: the frequent words are subsampled
    sentences = [rng.choices(words, weights, k=rng.randrange(3, 25)) for _ in range(8)]
    corpus = corpus_from_sentences(sentences, min_count=1)
    blocks = _blocks(corpus, 23, window=3, negatives=3, sample=0.02, seed=5, dynamic_window=dynamic, streams=3)
    assert (blocks.keep.numpy() < 0.9).sum() >= 3  # subsampling is exercised
    model = _model(corpus, 6, scale=1.5, window=3, negatives=3, dynamic_window=dynamic)
    w_in, w_out = (w.detach().numpy().copy() for w in (model.input.weight, model.output.weight))
    kernel = model.kernel(blocks.keep.numpy(), blocks.noise.numpy())
    total = clipped = 0
    for epoch in (0, 1):
        for batch in blocks.batches(epoch):
            loss, pairs = kernel.train(batch["corpus"], batch["offsets"], batch["ranges"], lr=0.05, seed=5, epoch=epoch)
            ref_loss, ref_pairs = 0.0, 0
            for lo, hi in batch["ranges"].tolist():  # the streams in turn
                add, count, beyond = reference(w_in, w_out, blocks, lr=0.05, seed=5, epoch=epoch, negatives=3, window=3,
                                               dynamic=dynamic, lo=lo, hi=hi)
                ref_loss, ref_pairs, clipped = ref_loss + add, ref_pairs + count, clipped + beyond
            assert pairs == ref_pairs and loss == pytest.approx(ref_loss, rel=1e-9)
            total += pairs
    assert total > 200 and clipped > 20
    np.testing.assert_allclose(model.input.weight.detach().numpy(), w_in, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.output.weight.detach().numpy(), w_out, rtol=1e-9, atol=1e-12)
    assert not np.allclose(w_in, _model(corpus, 6, scale=1.5).input.weight.detach().numpy())  # it trained


def test_noise_draws_and_sigmoid_tables_are_exact() -> None:
    """The alias table gives every token its noise probability q (to float32 rounding); the kernel's
    σ table is σ at the bins' centres (within 0.4 % of σ everywhere in ±6)."""
    from contrastkit.methods.skipgram_kernel import _vose_python, alias_table, sigmoid_bin, sigmoid_tables

    counts = np.array([5000, 700, 300, 300, 41, 6, 1, 0, 2, 90])
    q = noise_distribution(counts, 0.75)
    accept, alias = alias_table(q)
    drawn = accept.astype(np.float64).copy()
    np.add.at(drawn, alias, 1.0 - accept)
    np.testing.assert_allclose(drawn / q.size, q, atol=1e-7)
    scaled = q * q.size
    py_accept, py_alias = np.ones(q.size), np.arange(q.size, dtype=np.int32)
    _vose_python(scaled, py_accept, py_alias)
    assert np.array_equal(py_alias, alias) and np.allclose(py_accept, accept)  # the compiled construction is the same
    sigmoid, log_sigmoid = sigmoid_tables()
    f = np.linspace(-5.999, 5.999, 10001)
    bins = np.array([sigmoid_bin(x) for x in f])
    assert np.abs(sigmoid[bins] - 1 / (1 + np.exp(-f))).max() < 0.004
    np.testing.assert_allclose(log_sigmoid, np.log(sigmoid))


def test_streams_cover_the_epoch_once_and_draws_do_not_depend_on_the_blocks() -> None:
    """Each step takes the next slice of every stream, and the epoch's steps cover every position
    once. The draws hang on (seed, epoch, position), not on the step: read as one stream, one
    thread gives the same vectors whatever the batch size (and a run resumed at a step is the
    same run). Histories read as sets are reshuffled each epoch, as for the PyTorch path."""
    corpus = corpus_from_sentences(topic_sentences(40), min_count=1)
    blocks = _blocks(corpus, 100, streams=4)
    batches = list(blocks.batches(0))
    assert len(batches) == len(blocks) and all(b["ranges"].shape == (4, 2) for b in batches)
    covered = np.concatenate([np.arange(lo, hi) for b in batches for lo, hi in b["ranges"].tolist()])
    assert np.array_equal(np.sort(covered), np.arange(corpus.tokens.size))
    assert sum(b["tokens"] for b in batches) == corpus.tokens.size and batches[0]["ranges"][1, 0] > 100
    sets = _blocks(corpus, 64, seed=2, shuffle_sentences=True)
    assert sets.epoch_corpus(1).dtype == np.int32 and np.array_equal(sets.epoch_corpus(1), sets.tokens_of_epoch(1).numpy())
    assert not np.array_equal(sets.epoch_corpus(0), sets.epoch_corpus(1))
    results = []
    for size in (64, 1000):
        blocks = _blocks(corpus, size, seed=2)
        model = _model(corpus, 8)
        kernel = model.kernel(blocks.keep.numpy(), blocks.noise.numpy())
        for batch in blocks.batches(0):
            kernel.train(batch["corpus"], batch["offsets"], batch["ranges"], lr=0.02, seed=2, epoch=0)
        results.append(model.input.weight.detach().clone())
    assert torch.equal(results[0], results[1])


def test_two_threads_train_the_same_pairs_and_related_words_become_neighbours() -> None:
    """Two threads (the caller and a helper, taking a step's jobs from one queue) train exactly
    the pairs one thread trains — the draws hang on positions — in another interleaving; the loss
    falls and each topic's words end up closer to each other than to the other topic's. Steps
    submitted without waiting are all done once drained, the helper's share included."""
    from contrastkit.methods.skipgram_kernel import SkipGramKernel

    if SkipGramKernel.threads(2) < 2:
        pytest.skip("one CPU: the kernel runs in a single thread")
    corpus = corpus_from_sentences(topic_sentences(400), min_count=1)
    blocks = _blocks(corpus, 512, seed=0, streams=8)
    counts, kernels = [], []
    for threads in (1, 2):
        model = _model(corpus, 16)
        with torch.no_grad():
            model.input.weight.uniform_(-1 / 16, 1 / 16)
            model.output.weight.zero_()
        kernel = model.kernel(blocks.keep.numpy(), blocks.noise.numpy())
        losses, per_epoch = [], [0, 0, 0]
        for epoch in range(3):
            for batch in blocks.batches(epoch):
                loss, pairs = kernel.train(batch["corpus"], batch["offsets"], batch["ranges"], lr=0.025, seed=0,
                                           epoch=epoch, threads=threads)
                losses.append(loss / pairs)
                per_epoch[epoch] += pairs
        counts.append(per_epoch)
        kernels.append(kernel)
    assert counts[0] == counts[1]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    vectors = torch.nn.functional.normalize(model.input.weight.detach().float(), dim=1)
    where = {t: i for i, t in enumerate(corpus.vocab)}
    for topic, words in TOPICS.items():
        other = [w for t, ws in TOPICS.items() if t != topic for w in ws]
        same = torch.stack([vectors[where[a]] @ vectors[where[b]] for a in words for b in words if a < b]).mean()
        cross = torch.stack([vectors[where[a]] @ vectors[where[b]] for a in words for b in other]).mean()
        assert same > cross + 0.3, (topic, float(same), float(cross))
    submitted = 0
    for batch in blocks.batches(0):  # without waiting: some pairs come back with later steps, all of them once drained
        submitted += kernels[1].submit(batch["corpus"], batch["offsets"], batch["ranges"], lr=0.0, seed=0, epoch=0,
                                       threads=2)[1]
    pool = kernels[1]._pool
    assert pool is not None
    # submit left one job per helper waiting; the helper (not the caller, who may take every job on
    # a busy machine where the helper sleeps) trains it while the caller only waits
    pool.queue.join()
    assert pool.jobs[1] > 0
    assert submitted + kernels[1].drain()[1] == counts[0][0]


def test_jobs_split_the_ranges_in_order() -> None:
    from contrastkit.methods.skipgram_kernel import split_ranges

    ranges = np.array([[0, 10], [100, 103], [200, 207]])
    jobs = split_ranges(ranges, 4)
    assert [j.tolist() for j in jobs] == [[[0, 5]], [[5, 10]], [[100, 103], [200, 202]], [[202, 207]]]
    assert [j.tolist() for j in split_ranges(np.array([[3, 5]]), 4)] == [[[3, 4]], [[4, 5]]]  # no empty job


def test_resume_in_one_thread_is_exact(tmp_path: Path) -> None:
    """word2vec through the one loop on the kernel, killed after step 5 (checkpoint at step 3) and
    resumed: the uninterrupted run's vectors, bit for bit, across an epoch boundary."""
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(" ".join(s) for s in topic_sentences(60)) + "\n")
    sets = [f"sequences.text_file={text}", "sequences.min_count=1", "method.embedding_dim=8", "train.batch_size=128",
            "train.epochs=2", "train.checkpoint_every=3", "train.progress=false", "train.loggers=[csv]", "train.num_threads=1",
            "method.kernel=numba"]
    cfg = load_config("text-word2vec", sets)
    full = new_run_dir(cfg, str(tmp_path / "full"), resume=False)
    summary, _ = train_run(cfg, full, progress=False, verbose=False)
    assert summary.steps // 2 > 5  # the cut falls before the epoch boundary, the resumed run crosses it
    cut = new_run_dir(cfg, str(tmp_path / "cut"), resume=False)
    with pytest.raises(Interrupted):
        train_run(cfg, cut, progress=False, verbose=False, callbacks=[InterruptAt(5)])
    assert load_checkpoint(cut / "checkpoints" / "last.pt")["step"] == 3
    train_run(cfg, cut, resume=True, progress=False, verbose=False)
    a, b = (checkpoint_part(load_checkpoint(r / "checkpoints" / "last.pt"), "model") for r in (full, cut))
    for key in ("input.weight", "output.weight"):
        assert torch.equal(a[key], b[key]), key


def test_auto_takes_the_kernel_where_it_can_run() -> None:
    sgd = OptimConfig(name="sgd", momentum=0.0, weight_decay=0.0)
    cpu, train = torch.device("cpu"), TrainConfig()
    assert choose_kernel(SkipGramOptions(), sgd, train, cpu)[0] == "numba"
    assert choose_kernel(SkipGramOptions(kernel="torch"), sgd, train, cpu)[0] == "torch"
    kind, why = choose_kernel(SkipGramOptions(loss="nce"), sgd, train, cpu)
    assert kind == "torch" and why == "the numba kernel needs method.loss=sgns (not nce)"
    assert choose_kernel(SkipGramOptions(), OptimConfig(name="sparse_adam"), train, cpu)[0] == "torch"
    assert choose_kernel(SkipGramOptions(), sgd, train, torch.device("cuda"))[0] == "torch"
    message = r"^method.kernel=numba needs method.loss=sgns \(not nce\); use method.kernel=auto or torch$"
    with pytest.raises(UserError, match=message):
        choose_kernel(SkipGramOptions(kernel="numba", loss="nce"), sgd, train, cpu)
