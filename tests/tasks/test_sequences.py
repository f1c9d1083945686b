"""The sequences task: corpora, subsampling and noise against their formulas, skip-gram batches
against a naive enumeration, the SGD fast path against autograd + torch.optim.SGD, word2vec
and item2vec end to end through the CLI, item2vec against popularity."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastkit.cli import main
from contrastkit.data.sequences import (
    SkipGramLoader,
    corpus_from_histories,
    corpus_from_sentences,
    keep_probabilities,
    noise_distribution,
    tokenize,
)
from contrastkit.errors import UserError
from contrastkit.methods.skipgram import SkipGram, kernel_available
from contrastkit.recipes import load_config
from contrastkit.runner import evaluate, load_run, train_run

from ..conftest import SHARED_DATA
from ..recsys_helpers import write_tiny_movielens

pytestmark = pytest.mark.usefixtures("one_thread")

TOPICS = {
    "animals": ["cat", "dog", "horse", "cow", "sheep", "goat", "mouse", "bird"],
    "vehicles": ["car", "bus", "train", "truck", "plane", "boat", "bike", "tram"],
}


def topic_corpus(n: int = 600, seed: int = 0) -> list[list[str]]:
    """Sentences of words from one topic each, with shared function words."""
    rng = random.Random(seed)
    sentences = []
    for i in range(n):
        words = TOPICS["animals" if i % 2 else "vehicles"]
        sentence = []
        for _ in range(12):
            sentence.append(rng.choice(words))
            if rng.random() < 0.3:
                sentence.append(rng.choice(["the", "a", "and"]))
        sentences.append(sentence)
    return sentences


def test_tokenizer_and_vocabulary() -> None:
    assert tokenize("Don't STOP, 3 cats!") == ["don't", "stop", "3", "cats"]
    assert tokenize("a  b\tc", "whitespace", lowercase=False) == ["a", "b", "c"]
    corpus = corpus_from_sentences([["a", "b", "a"], ["c", "a", "b"], ["d"]], min_count=2)
    assert corpus.vocab == ["a", "b"] and corpus.counts.tolist() == [3, 2]
    assert corpus.tokens.tolist() == [0, 1, 0, 0, 1] and corpus.offsets.tolist() == [0, 3, 5]
    capped = corpus_from_sentences([["a", "b", "a"], ["c", "a", "b"], ["d"]], min_count=1, max_vocab=1)
    assert capped.vocab == ["a"] and capped.offsets.tolist() == [0, 2, 3]


def test_subsampling_and_noise_follow_their_formulas() -> None:
    counts = np.array([1000, 100, 10, 1])
    t = 1e-2
    f = counts / counts.sum()
    expected = np.minimum((np.sqrt(f / t) + 1) * t / f, 1)
    np.testing.assert_allclose(keep_probabilities(counts, t), expected)
    assert keep_probabilities(counts, 0).tolist() == [1, 1, 1, 1]
    q = noise_distribution(counts, 0.75)
    np.testing.assert_allclose(q, counts**0.75 / (counts**0.75).sum())
    # the sampling table and the subsampling draws realise these probabilities
    sentences = [[str(i)] * int(c) for i, c in enumerate(counts)]
    corpus = corpus_from_sentences(sentences, min_count=1)
    loader = SkipGramLoader(corpus, batch_size=64, sample=t, negatives=5)
    draws = loader.table[torch.randint(0, loader.table.numel(), (200_000,), generator=torch.Generator().manual_seed(0))]
    freq = torch.bincount(draws, minlength=4).double() / draws.numel()
    np.testing.assert_allclose(freq.numpy(), noise_distribution(corpus.counts, 0.75), atol=0.005)
    kept = torch.rand(100_000, generator=torch.Generator().manual_seed(1)) < loader.keep[0]
    assert abs(float(kept.double().mean()) - keep_probabilities(corpus.counts, t)[0]) < 0.01


def _naive_pairs(sentences: list[list[int]], window: int) -> list[tuple[int, int]]:
    """(centre token, context token) for every position i and every j != i within the window."""
    return [
        (sentence[i], sentence[j])
        for sentence in sentences
        for i in range(len(sentence))
        for j in range(max(0, i - window), min(len(sentence), i + window + 1))
        if j != i
    ]


def test_pairs_are_the_windows_within_each_sentence() -> None:
    rng = random.Random(0)
    sentences = [[rng.randrange(20) for _ in range(rng.randrange(2, 15))] for _ in range(40)]
    corpus = corpus_from_sentences([[str(t) for t in s] for s in sentences], min_count=1)
    ids = [[corpus.vocab.index(str(t)) for t in s] for s in sentences]
    loader = SkipGramLoader(corpus, batch_size=37, window=3, sample=0, dynamic_window=False, shared_negatives=False)
    got = []
    for step in range(len(loader)):
        centres, owner, contexts = loader.pairs(0, step)
        got += list(zip(centres[owner].tolist(), contexts.tolist(), strict=True))
    assert sorted(got) == sorted(_naive_pairs(ids, 3))  # every (centre, context) within 3 in the same sentence, once


def test_batches_are_deterministic_and_shared_negatives_have_one_row_per_centre() -> None:
    corpus = corpus_from_sentences(topic_corpus(50), min_count=1)
    a = SkipGramLoader(corpus, batch_size=100, seed=3)
    b = SkipGramLoader(corpus, batch_size=100, seed=3)
    first, again = list(a.batches(1, 2)), list(b.batches(1))[2:]
    assert len(first) == len(again) == len(a) - 2
    for x, y in zip(first, again, strict=True):
        for key in ("centers", "pair_center", "contexts", "negatives"):
            assert torch.equal(x[key], y[key]), key
    batch = first[0]
    assert batch["negatives"].shape == (batch["centers"].numel(), 5)
    assert int(batch["pair_center"].max()) == batch["centers"].numel() - 1
    per_pair = next(SkipGramLoader(corpus, batch_size=100, seed=3, shared_negatives=False).batches(1, 2))
    assert per_pair["negatives"].shape == (per_pair["contexts"].numel(), 5)
    assert not any(torch.equal(x["centers"], y["centers"]) for x, y in zip(a.batches(0), a.batches(1), strict=False))


@pytest.mark.parametrize(("shared", "loss"), [(True, "sgns"), (False, "sgns"), (True, "nce")])
def test_the_sgd_fast_path_is_autograd_plus_torch_sgd(shared: bool, loss: str) -> None:
    corpus = corpus_from_sentences(topic_corpus(80), min_count=1)
    loader = SkipGramLoader(corpus, batch_size=128, negatives=4, shared_negatives=shared, seed=0)
    batch = next(loader.batches(0))
    torch.manual_seed(0)
    fast = SkipGram(len(corpus.vocab), embedding_dim=8, negatives=4, loss=loss, log_noise=loader.log_noise).double()
    with torch.no_grad():  # non-zero output vectors so that every gradient term is exercised
        fast.output.weight.normal_(0, 0.1)
    slow = SkipGram(len(corpus.vocab), embedding_dim=8, negatives=4, loss=loss, log_noise=loader.log_noise).double()
    slow.load_state_dict(fast.state_dict())
    before = fast.sgd_step(batch, lr=0.05)
    value = slow.loss(batch)
    value.backward()
    torch.optim.SGD(slow.parameters(), lr=0.05).step()
    torch.testing.assert_close(before, value.detach())
    torch.testing.assert_close(fast.input.weight, slow.input.weight, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fast.output.weight, slow.output.weight, rtol=1e-10, atol=1e-12)


def write_topic_words(root: Path, sentences: int = 800) -> tuple[Path, Path]:
    """A topic corpus (corpus.txt) and word pairs scored 9 within a topic, 1 across (pairs.tsv)."""
    text = root / "corpus.txt"
    text.write_text("\n".join(" ".join(s) for s in topic_corpus(sentences)) + "\n")
    pairs = root / "pairs.tsv"
    same = [("cat", "dog"), ("car", "bus"), ("horse", "cow"), ("train", "plane"), ("goat", "bird"), ("boat", "tram")]
    cross = [("cat", "car"), ("dog", "train"), ("bike", "sheep"), ("horse", "truck"), ("mouse", "boat"), ("cow", "tram")]
    rows = [f"{a}\t{b}\t9" for a, b in same] + [f"{a}\t{b}\t1" for a, b in cross]
    pairs.write_text("# word1\tword2\tscore\n" + "\n".join(rows) + "\n")
    return text, pairs


def test_word2vec_learns_topics_and_the_cli_uses_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, pairs = write_topic_words(tmp_path)
    run = tmp_path / "run"
    sets = ["--set", f"sequences.text_file={text}", "--set", f"sequences.similarity_file={pairs}",
            "--set", "sequences.neighbours=[cat]", "--set", "train.epochs=3", "--set", "train.progress=false",
            "--set", "method.embedding_dim=16", "--set", "sequences.min_count=1", "--set", "train.batch_size=512"]
    assert main(["train", "text-word2vec", *sets, "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "tokens/s" in out and "word similarity (pairs.tsv)" in out
    kernel = "numba kernel (compiled per-pair updates, 1 thread)" if kernel_available() else "PyTorch (the numba kernel needs"
    assert kernel in out
    results = json.loads((run / "results.json").read_text())
    # same-topic pairs (score 9) above cross-topic ones (score 1): a Spearman of 0.87 when perfect
    assert results["eval"]["similarity"]["spearman"] > 0.7 and results["eval"]["similarity"]["coverage"] == 1.0
    losses = [float(line.split(",")[2]) for line in (run / "train_log.csv").read_text().splitlines()[1:]]
    assert losses[-1] < losses[0]
    neighbours = [r["item"] for r in results["eval"]["neighbours"]["cat"]]
    assert sum(w in TOPICS["animals"] for w in neighbours) >= 4, neighbours
    assert main(["similar", str(run), "--word", "Horse", "--k", "3"]) == 0
    head, *listed = capsys.readouterr().out.splitlines()
    assert head == "3 words most similar to word Horse (cosine):"  # a word run says "word"
    assert sum(line.split()[1] in TOPICS["animals"] for line in listed) >= 2
    assert main(["similar", str(run), "--item", "Horse", "--k", "3"]) == 0  # --item: the same option
    assert capsys.readouterr().out.splitlines()[1:] == listed
    assert main(["embed", str(run), "--out", str(tmp_path / "w.npz")]) == 0
    with np.load(tmp_path / "w.npz") as arrays:
        assert arrays["vectors"].shape == (len(arrays["tokens"]), 16)
    assert main(["recommend", str(run), "--user", "1"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "contrastkit recommend works on runs of task recsys / sequences; this run's task is 'sequences' "
        "(text (word2vec) runs cannot)"
    )
    assert main(["similar", str(run), "--item", "zebra"]) == 2
    assert "unknown token 'zebra'" in capsys.readouterr().err


def test_history_corpus_orders_by_time_and_sets_reshuffle_each_epoch() -> None:
    pairs = np.array([[0, 5], [0, 3], [1, 2], [0, 4], [1, 1]])
    times = np.array([30.0, 10.0, 5.0, 20.0, 1.0])
    corpus = corpus_from_histories(pairs, times, 6, [str(i) for i in range(6)])
    assert corpus.tokens.tolist() == [3, 4, 5, 1, 2] and corpus.offsets.tolist() == [0, 3, 5]
    big = corpus_from_histories(np.array([[0, i] for i in range(30)]), None, 30, [str(i) for i in range(30)])
    loader = SkipGramLoader(big, batch_size=10, shuffle_sentences=True)
    e0, e0b, e1 = loader.tokens_of_epoch(0).clone(), loader.tokens_of_epoch(0), loader.tokens_of_epoch(1)
    assert torch.equal(e0, e0b) and not torch.equal(e0, e1) and sorted(e1.tolist()) == list(range(30))


def test_item2vec_cli_on_tiny_movielens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_tiny_movielens(tmp_path / "ml", n_users=60)
    run = tmp_path / "run"
    sets = ["recsys.root=" + str(root), "recsys.eval_ks=[5, 10, 20]", "recsys.valid_metric=ndcg@10",
            "train.epochs=30", "train.progress=false", "method.embedding_dim=16", "train.batch_size=128",
            "method.sample=0"]  # 420 tokens: subsampling would drop most of them
    assert main(["train", "ml100k-item2vec", *[x for s in sets for x in ("--set", s)], "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "skipgram" in out and "popularity" in out
    results = json.loads((run / "results.json").read_text())
    test = results["eval"]["test"]
    assert test["skipgram"]["ndcg@10"] > test["popularity"]["ndcg@10"], test
    # contrastkit compare's figures (as a recsys run's): the trained model's, not the baselines'
    assert load_run(run).compare_row(results) == {k: test["skipgram"][k] for k in ("recall@20", "ndcg@20")}
    assert main(["recommend", str(run), "--user", "3", "--k", "5"]) == 0
    recommended = [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]]
    assert sum(int(i) % 2 == 0 for i in recommended) >= 4, recommended  # user 3 likes even items
    assert main(["similar", str(run), "--item", "7", "--k", "3"]) == 0
    printed = capsys.readouterr().out
    assert "Movie" in printed and printed.startswith("3 items most similar to item 7 (cosine):")
    # a run trained without evaluation has its user and item vectors too (embed, export, serve):
    # the task's after_training writes them (the one loop alone here: no evaluation, no report)
    bare = tmp_path / "bare"
    bare.mkdir()
    train_run(load_config("ml100k-item2vec", [*sets, "train.epochs=1"]), bare, progress=False, verbose=False)
    assert not (bare / "results.json").exists()
    assert main(["embed", str(bare), "--out", str(tmp_path / "e.npz")]) == 0
    with np.load(tmp_path / "e.npz") as e:
        assert e["item_embeddings"].shape[0] > 0 and len(e["user_ids"]) == 60, list(e.keys())


def naive_ndcg(users: np.ndarray, items: np.ndarray, train: np.ndarray, targets: np.ndarray, k: int) -> float:
    """NDCG@k of ranking every item by user · item, the user's train items left out, averaged
    over the users with targets: a loop per user."""
    values = []
    for u in sorted(set(targets[:, 0].tolist())):
        scores = items @ users[u]
        scores[train[train[:, 0] == u, 1]] = -np.inf
        relevant = set(targets[targets[:, 0] == u, 1].tolist())
        top = np.argsort(-scores, kind="stable")[:k]
        dcg = sum(1 / math.log2(rank + 2) for rank, i in enumerate(top) if int(i) in relevant)
        values.append(dcg / sum(1 / math.log2(rank + 2) for rank in range(min(len(relevant), k))))
    return float(np.mean(values))


@pytest.mark.skipif(not kernel_available(), reason="numba is not installed (the kernel is optional)")
def test_item2vec_validates_on_the_valid_split_and_resumes_exactly(tmp_path: Path) -> None:
    """item2vec measures val_ndcg@10 on the valid split every eval.valid_every steps and after the
    last: results.json's ``validation``, whose value is NDCG@10 computed here from the saved user
    and item vectors. A run interrupted and resumed (the numba kernel, one thread) measures the same
    curve and ends with the same vectors, bit for bit. word2vec on a text corpus has no validation."""
    from contrastkit.index.vectors import load_vectors
    from contrastkit.runs import new_run_dir
    from contrastkit.tasks import ValidationSpec, get_task

    from ..conftest import InterruptAt, Interrupted

    root = write_tiny_movielens(tmp_path / "ml", n_users=60)
    sets = ["recsys.root=" + str(root), "recsys.eval_ks=[5, 10, 20]", "recsys.valid_metric=ndcg@10", "train.epochs=4",
            "train.progress=false", "method.embedding_dim=16", "train.batch_size=32", "method.sample=0",
            "method.kernel=numba", "train.num_threads=1", "eval.valid_every=3", "train.checkpoint_every=4"]
    cfg = load_config("ml100k-item2vec", sets)
    assert get_task("sequences").validation(cfg) == ValidationSpec("val_ndcg@10", "max", (), "eval.valid_every")
    full = new_run_dir(cfg, str(tmp_path / "full"), resume=False)
    summary, extra = train_run(cfg, full, progress=False, verbose=False)
    val = extra["validation"]
    steps = [p["step"] for p in val["curve"]]
    assert summary.steps > 6 and steps == [*range(3, summary.steps + 1, 3), *([summary.steps] if summary.steps % 3 else [])]
    assert val["metric"] == "val_ndcg@10" and val["value"] == val["curve"][-1]["value"] and not val["kept_best"]
    data, saved = load_run(full).interactions(), load_vectors(full)
    assert saved is not None
    users, items = (t.double().numpy() for t in saved)
    assert val["value"] == pytest.approx(naive_ndcg(users, items, data.train, data.valid, 10), abs=1e-6)
    assert 0 < val["value"] < 1

    cut = new_run_dir(cfg, str(tmp_path / "cut"), resume=False)
    with pytest.raises(Interrupted):  # after the validation of step 6, from the checkpoint of step 4
        train_run(cfg, cut, progress=False, verbose=False, callbacks=[InterruptAt(7)])
    _, again = train_run(cfg, cut, resume=True, progress=False, verbose=False)
    assert again["validation"]["curve"] == [{**p, "seconds": q["seconds"]} for p, q in zip(
        val["curve"], again["validation"]["curve"], strict=True)]
    assert all(torch.equal(a, b) for a, b in zip(saved, load_vectors(cut) or (), strict=True))

    text = load_config("text-word2vec", ["sequences.text_file=x.txt"])
    with pytest.raises(UserError, match=r"^word2vec on a text corpus has no validation split \(its word-similarity"):
        get_task("sequences").validation(text)
    with pytest.raises(UserError, match=r"^eval.valid_every: word2vec on a text corpus has no validation split"):
        load_config("text-word2vec", ["eval.valid_every=5"])


ML100K = SHARED_DATA / "ml-100k"


@pytest.mark.skipif(not (ML100K / "u.data").is_file(), reason=f"MovieLens 100K not found at {ML100K} (shared data)")
def test_item2vec_beats_popularity_on_ml100k(tmp_path: Path) -> None:
    from contrastkit.runs import new_run_dir

    cfg = load_config("ml100k-item2vec", [f"recsys.root={ML100K}", "train.progress=false"])
    run = new_run_dir(cfg, str(tmp_path / "run"), resume=False)
    summary, _ = train_run(cfg, run, progress=False, verbose=False)
    test = evaluate(load_run(run), verbose=False, report=False)["test"]
    assert test["skipgram"]["ndcg@20"] > 1.3 * test["popularity"]["ndcg@20"], test  # measured: 1.6x
    assert math.isfinite(summary.final_loss)
