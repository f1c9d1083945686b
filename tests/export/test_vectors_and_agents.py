"""`contrastkit export --format word2vec` and `--format sb3`, and the run objects behind them:
gensim loads the word2vec file and its `most_similar` (analogies included) gives the words and
scores of `run.most_similar`; item2vec and recommendation runs export their item vectors; keys
with spaces are written with '_'; `DQN.load` loads the agent's zip and acts with the run's
Q-values. Tiny runs, trained once per module."""

from __future__ import annotations

import contextlib
import io
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import contrastkit
from contrastkit.cli import main
from contrastkit.errors import UserError
from contrastkit.index.keyed import KeyedVectors
from contrastkit.runner import load_run
from contrastkit.runs import checkpoint_part

from ..recsys_helpers import tiny_sets, write_tiny_movielens

pytestmark = pytest.mark.usefixtures("one_thread")

ANIMALS = ["cat", "dog", "horse", "cow", "sheep", "goat", "mouse", "bird"]
VEHICLES = ["car", "bus", "train", "truck", "plane", "boat", "bike", "tram"]


def _write_corpus(path: Path, n: int = 800) -> Path:
    """Sentences of twelve words from one topic each, with shared function words between them."""
    rng = random.Random(0)
    lines = []
    for i in range(n):
        words = ANIMALS if i % 2 else VEHICLES
        sentence = []
        for _ in range(12):
            sentence.append(rng.choice(words))
            if rng.random() < 0.3:
                sentence.append(rng.choice(["the", "a", "and"]))
        lines.append(" ".join(sentence))
    path.write_text("\n".join(lines) + "\n")
    return path


def _quiet(argv: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0


def _sets(values: dict[str, object]) -> list[str]:
    return [x for k, v in values.items() for x in ("--set", f"{k}={v}")]


def _export(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> list[str]:
    capsys.readouterr()
    assert main(["export", *map(str, argv)]) == 0, capsys.readouterr().err
    return capsys.readouterr().out.splitlines()


@pytest.fixture(scope="module")
def w2v(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("w2v")
    corpus = _write_corpus(root / "corpus.txt")
    run = root / "run"
    _quiet(["train", "text-word2vec", "--no-eval", "--out", str(run), *_sets({
        "sequences.text_file": corpus, "sequences.min_count": 1, "method.embedding_dim": 16, "train.epochs": 3,
        "train.batch_size": 512, "train.progress": False,
    })])
    return run


# ----------------------------------------------------------------------------- word2vec


def test_word2vec_file_loads_in_gensim_and_most_similar_agrees(
    w2v: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gensim_models = pytest.importorskip("gensim.models")  # a `test` extra: installed wherever the suite runs
    run = contrastkit.load_run(w2v)  # the public run object: vectors and most_similar as users see them
    out = tmp_path / "vectors.txt"
    lines = _export(capsys, w2v, "--format", "word2vec", "--out", out)
    assert lines[0] == f"wrote {out}: {len(run.vectors)} tokens × 16 (word2vec text format: a 'N D' header line, then " \
                       "'token v1 … v16' per line)"
    assert "vectors identical" in lines[1] and "load_word2vec_format" in "\n".join(lines)
    header = out.read_text().splitlines()[0]
    assert header == f"{len(run.vectors)} 16"

    kv = gensim_models.KeyedVectors.load_word2vec_format(str(out), binary=False)
    assert list(kv.index_to_key) == run.vectors.words and set(ANIMALS + VEHICLES) <= set(run.vectors.words)
    np.testing.assert_array_equal(kv.vectors, run.vectors.matrix)
    np.testing.assert_array_equal(kv["cat"], run.vectors["cat"])
    for positive, negative in ((["cat"], []), (["car", "dog"], ["cat"]), (["horse", "bus"], ["train", "the"])):
        want = kv.most_similar(positive=positive, negative=negative, topn=6)
        got = run.most_similar(positive=positive, negative=negative, k=6)
        assert [w for w, _ in got] == [w for w, _ in want], (positive, negative)
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
        assert not set(positive + negative) & {w for w, _ in got}  # the query words are left out
    # the topics are learned: an animal's neighbours are animals, car − cat + dog is a vehicle
    assert sum(w in ANIMALS for w, _ in run.most_similar(positive=["cat"], k=5)) >= 4
    assert run.most_similar(positive=["car", "dog"], negative=["cat"], k=1)[0][0] in VEHICLES


def test_word_vectors_api(w2v: Path) -> None:
    run = load_run(w2v)
    vectors = run.vectors
    assert isinstance(vectors, KeyedVectors) and vectors is run.vectors  # built once
    assert "cat" in vectors and "Cat" in vectors and "zebra" not in vectors and 3 not in vectors  # the corpus was lowercased
    assert len(vectors) == len(vectors.words) == vectors.matrix.shape[0] and vectors.dim == 16
    np.testing.assert_array_equal(vectors["Cat"], run.weights()[0][vectors.index("cat")].numpy())
    # 3CosAdd by hand: unit vectors, positive − negative, cosine with every word, the query left out
    unit = vectors.matrix / np.linalg.norm(vectors.matrix, axis=1, keepdims=True)
    query = unit[vectors.index("car")] + unit[vectors.index("dog")] - unit[vectors.index("cat")]
    scores = unit @ (query / np.linalg.norm(query))
    order = [vectors.words[i] for i in np.argsort(-scores) if vectors.words[i] not in ("car", "dog", "cat")][:3]
    assert [w for w, _ in run.most_similar(positive=["car", "dog"], negative="cat", k=3)] == order
    # a single word is its nearest neighbours, as `contrastkit similar` lists them
    assert [w for w, _ in run.most_similar("horse", k=4)] == [r["item"] for r in run.similar("horse", 4)]
    for call, message in (
        (lambda: vectors["zebra"], "unknown token 'zebra': not in the run's vocabulary of"),
        (lambda: run.most_similar(positive=["cat", "zebra"]), "unknown token 'zebra'"),
        (lambda: run.most_similar(), "most_similar needs at least one positive or negative token"),
        (lambda: run.most_similar("cat", k=0), "k 0 must be at least 1"),
    ):
        with pytest.raises(UserError, match=message) as info:
            call()
        assert len(str(info.value).splitlines()) == 1


def test_keys_with_spaces_are_written_with_underscores(tmp_path: Path) -> None:
    gensim_models = pytest.importorskip("gensim.models")
    from contrastkit.export.word2vec import export_word2vec

    rng = np.random.default_rng(0)
    keys = ["The Matrix", "Alien", "Blade\tRunner", "Ça va"]
    vectors = KeyedVectors(keys, rng.standard_normal((4, 5)).astype(np.float32), what="item")
    lines = export_word2vec(vectors, tmp_path / "items.vec")
    assert "3 item id(s) hold whitespace, written with '_' instead (e.g. 'The Matrix' → 'The_Matrix')" in lines[1]
    kv = gensim_models.KeyedVectors.load_word2vec_format(str(tmp_path / "items.vec"), binary=False)
    assert list(kv.index_to_key) == ["The_Matrix", "Alien", "Blade_Runner", "Ça_va"]
    np.testing.assert_array_equal(kv.vectors, vectors.matrix)
    clash = KeyedVectors(["a b", "a_b"], np.ones((2, 3), dtype=np.float32), what="item")
    with pytest.raises(UserError, match="items 'a b' and 'a_b' both become 'a_b' in the word2vec format"):
        export_word2vec(clash, tmp_path / "clash.txt")
    assert not (tmp_path / "clash.txt").exists() and not list(tmp_path.glob(".clash*"))  # nothing half written


@pytest.mark.parametrize("recipe", ["ml100k-item2vec", "ml100k-lightgcn"])
def test_item_vectors_export_and_agree_with_similar(
    recipe: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gensim_models = pytest.importorskip("gensim.models")
    ml = write_tiny_movielens(tmp_path / "ml")
    run_dir = tmp_path / "run"
    extra: dict[str, object] = {"train.epochs": 1}
    if recipe == "ml100k-item2vec":  # 300 tokens: subsampling would drop most of them
        extra = {"method.sample": 0, "train.epochs": 3, "train.batch_size": 128}
    _quiet(["train", recipe, "--no-eval", "--out", str(run_dir), *tiny_sets(ml, **extra)])
    out = tmp_path / "items.txt"
    lines = _export(capsys, run_dir, "--format", "word2vec", "--out", out)
    assert lines[0].startswith(f"wrote {out}: 30 items × ")
    run = load_run(run_dir)
    kv = gensim_models.KeyedVectors.load_word2vec_format(str(out), binary=False)
    assert list(kv.index_to_key) == [str(i) for i in range(1, 31)]
    np.testing.assert_array_equal(kv.vectors, run.keyed_vectors().matrix)
    want = [(r["item"], r["score"]) for r in run.similar("7", 5)]
    got = kv.most_similar(positive=["7"], topn=5)
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


# ----------------------------------------------------------------------------- Stable-Baselines3

RL_TINY = {
    "rl.steps": 80, "rl.learning_starts": 30, "rl.train_freq": 10, "rl.gradient_steps": 2, "rl.net_arch": "[32]",
    "rl.buffer_size": 200, "rl.eval_every": 0, "rl.eval_episodes": 1, "rl.height": 24, "rl.width": 48,
    "rl.crop_margin": 2, "rl.features_dim": 16, "train.batch_size": 16, "train.num_threads": 1,
}


@pytest.mark.parametrize("recipe", ["cartpole-state", "cartpole-pixels"])
def test_sb3_zip_loads_with_dqn_load_and_acts_as_the_run(
    recipe: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("stable_baselines3")
    gym = pytest.importorskip("gymnasium")
    from stable_baselines3 import DQN

    run_dir = tmp_path / "run"
    _quiet(["train", recipe, "--no-eval", "--out", str(run_dir), *_sets(RL_TINY)])
    out = tmp_path / "agent.zip"
    lines = _export(capsys, run_dir, "--format", "sb3", "--out", out)
    policy = "MlpPolicy" if recipe == "cartpole-state" else "CnnPolicy"
    assert lines[0] == f"wrote {out} (Stable-Baselines3 DQN, {policy}, 80 environment steps of training; no replay buffer)"
    assert "the same greedy actions" in lines[1]
    assert ("contrastkit.rl.agent.PixelExtractor" in lines[2]) == (recipe == "cartpole-pixels")

    model = DQN.load(str(out), device="cpu")
    run = load_run(run_dir)
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    run.agent()  # building the agent seeds every generator: the caller's are put back
    assert random.getstate() == before[0] and (np.random.get_state()[1] == before[1]).all()
    assert torch.equal(torch.get_rng_state(), before[2])
    # the optimiser's state is the checkpoint's (Adam's moments): training can go on from the zip
    saved = checkpoint_part(torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True), "optimizer")["state"]
    loaded = model.policy.optimizer.state_dict()["state"]
    assert saved and all(torch.equal(loaded[k]["exp_avg"], saved[k]["exp_avg"]) for k in saved)
    if recipe == "cartpole-state":
        env = gym.make("CartPole-v1")  # as the printed snippet says
    else:
        from contrastkit.rl.envs import make_env

        env = make_env("CartPole-v1", pixels=True, height=24, width=48, stack=3, seed=0)
    obs, _ = env.reset(seed=3)
    for _ in range(10):  # the loaded agent acts in the environment, greedily, as the run would
        action, _ = model.predict(obs, deterministic=True)
        q_run = run.q_values(obs)
        q_loaded = model.q_net(model.policy.obs_to_tensor(obs)[0]).detach().numpy()[0]
        np.testing.assert_allclose(q_loaded, q_run, rtol=0, atol=1e-6)
        assert int(action) == int(np.argmax(q_run))
        obs, _, terminated, truncated, _ = env.step(int(action))
        if terminated or truncated:
            obs, _ = env.reset()
    assert model.buffer_size == 200 and model.exploration_rate == 0.0  # the settings as trained; greedy
    # the policy is the trained one, not a fresh network's
    fresh = DQN("MlpPolicy" if recipe == "cartpole-state" else "CnnPolicy", model.get_env() or env, device="cpu",
                policy_kwargs=model.policy_kwargs, seed=1)
    assert not np.allclose(fresh.q_net(fresh.policy.obs_to_tensor(obs)[0]).detach().numpy()[0], run.q_values(obs))


def test_one_line_errors(w2v: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        ([w2v, "--format", "sb3", "--out", tmp_path / "a.zip"],
         "--format sb3 exports runs of task rl; this run's task is 'sequences', which exports to: arrays, word2vec"),
        ([w2v, "--format", "word2vec", "--out", tmp_path / "v.bin"], "word2vec text goes into a .txt or .vec file"),
        ([w2v, "--format", "sb3", "--out", tmp_path / "a.pkl"], "a Stable-Baselines3 agent is a .zip file; name it *.zip"),
        ([w2v, "--format", "word2vec", "--data", "tokens", "--out", tmp_path / "v.txt"],
         "--data chooses the data set of --format arrays"),
    ):
        assert main(["export", *map(str, argv)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("contrastkit: error: ") and message in err and len(err.splitlines()) == 1, err
