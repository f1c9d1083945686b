"""Recommendation end to end: recipes through the pipeline and the CLI (train → recommend →
similar → embed → evaluate), early stopping, resume, and a 200-user slice of MovieLens 100K."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contrastkit.cli import main
from contrastkit.config import load_config
from contrastkit.errors import UserError
from contrastkit.runs import new_run_dir
from contrastkit.tasks.runner import run_all

from ..conftest import SHARED_DATA

ML100K = SHARED_DATA / "ml-100k"

pytestmark = pytest.mark.usefixtures("one_thread")


def write_tiny_movielens(folder: Path, n_users: int = 40, n_items: int = 30, seed: int = 0) -> Path:
    """u.data + u.item in GroupLens format: two taste groups (even / odd items), ratings 1-5."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for u in range(1, n_users + 1):
        liked = np.arange(1 + (u % 2), n_items + 1, 2)
        for j, i in enumerate(rng.choice(liked, 9, replace=False)):
            lines.append(f"{u}\t{i}\t{int(rng.integers(4, 6))}\t{1000 + 10 * u + j}")
        lines.append(f"{u}\t{2 - (u % 2)}\t1\t{900 + u}")  # one disliked item of the other group
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    (folder / "u.item").write_text(
        "".join(f"{i}|Movie {i} ({1990 + i})|01-Jan-1995||http://x|0\n" for i in range(1, n_items + 1))
    )
    return folder


def tiny_sets(root: Path, **extra: object) -> list[str]:
    base: dict[str, object] = {
        "recsys.root": str(root),
        "method.embedding_dim": 16,
        "recsys.eval_ks": "[5, 10, 20]",
        "recsys.valid_metric": "ndcg@10",
        "recsys.patience": 50,
        "recsys.eval_every": 1,
        "train.batch_size": 64,
        "train.epochs": 6,
        "train.progress": False,
        "optim.lr": 0.02,
    }
    base.update(extra)
    out = []
    for key, value in base.items():
        out += ["--set", f"{key}={value}"]
    return out


def test_cli_train_recommend_similar_embed_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_tiny_movielens(tmp_path / "ml")
    run = tmp_path / "run"
    # 30 epochs: SimGCL's contrastive term needs them before the taste groups show (6 are not enough)
    assert main(["train", "ml100k-simgcl", "--out", str(run), *tiny_sets(root, **{"train.epochs": 30})]) == 0
    out = capsys.readouterr().out
    assert "ndcg@10" in out and "popularity" in out and "simgcl" in out
    results = json.loads((run / "results.json").read_text())
    assert results["config"]["task"] == "recsys"
    test = results["eval"]["test"]
    assert set(test) == {"simgcl", "popularity"} and test["simgcl"]["users"] == 40
    for name in ("split.npz", "ids.json"):
        assert (run / "data" / name).is_file()
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "embeddings.safetensors").is_file()

    # recommend: user's own id, titles, nothing the user has seen, K rows
    assert main(["recommend", str(run), "--user", "3", "--k", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("top 5 for user 3") and len(lines) == 6
    seen = {ln.split("\t")[1] for ln in (root / "u.data").read_text().splitlines() if ln.split("\t")[0] == "3"}
    recommended = [ln.split()[1] for ln in lines[1:]]
    assert not seen & set(recommended)
    assert all("Movie " in ln for ln in lines[1:])
    # the model learnt the taste groups: user 3 likes even items (write_tiny_movielens) and gets them
    assert sum(int(i) % 2 == 0 for i in recommended) >= 3, recommended

    assert main(["similar", str(run), "--item", "7", "--k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and "7" not in [ln.split()[1] for ln in lines[1:]]

    npz = tmp_path / "emb.npz"
    assert main(["embed", str(run), "--out", str(npz)]) == 0
    with np.load(npz) as arrays:
        assert arrays["user_embeddings"].shape == (40, 16) and arrays["item_embeddings"].shape == (30, 16)
        assert arrays["user_ids"][0] == "1"
    assert main(["embed", str(run), "--data", "items", "--out", str(tmp_path / "items.npy")]) == 0
    assert np.load(tmp_path / "items.npy").shape == (30, 16)
    assert (tmp_path / "items.ids.txt").read_text().split()[:2] == ["1", "2"]
    capsys.readouterr()

    # bad input: one line on stderr, exit 2
    for argv, message in (
        (["recommend", str(run), "--user", "999"], "unknown user id '999'"),
        (["similar", str(run), "--item", "abc"], "unknown item id 'abc'"),
        (["embed", str(run), "--out", str(tmp_path / "e.npy")], "name it *.npz"),
        (["embed", str(run), "--data", "books", "--out", str(tmp_path / "e.npy")], "allowed: all, items, users"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err

    assert main(["evaluate", str(run)]) == 0
    assert "popularity" in capsys.readouterr().out


def test_early_stopping_keeps_the_best_epoch(tmp_path: Path) -> None:
    root = write_tiny_movielens(tmp_path / "ml")
    cfg = load_config("ml100k-lightgcn", [s for s in tiny_sets(root, **{
        "train.epochs": 40, "recsys.patience": 2, "optim.lr": 1e-9}) if s != "--set"])
    run = new_run_dir(cfg, str(tmp_path / "run"), resume=False)
    results = run_all(cfg, run, progress=False, verbose=False)
    es = results["early_stopping"]
    # nothing changes with lr 1e-9: epoch 1 stays the best and training stops 2 validations later
    assert results["train"]["stopped_by"] == "early_stopping"
    assert es["best_epoch"] == 1 and results["train"]["epochs_done"] == 3
    # the evaluated model is the best checkpoint: its validation metric is the one recorded
    assert results["eval"]["valid"]["lightgcn"]["ndcg@10"] == pytest.approx(es["best"], abs=1e-6)
    log = (run / "validation_log.csv").read_text().splitlines()
    assert len(log) == 4 and log[0].startswith("epoch,step,loss")


def test_seconds_per_epoch_leaves_out_every_validation_and_only_those(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each validation (made to take 0.4 s) is counted in the run's seconds and subtracted from the
    training time once; the last one too (it used to be subtracted without being counted)."""
    import time

    import contrastkit.tasks.recsys as recsys

    real = recsys.evaluate_split

    def slow(*args: object, **kwargs: object) -> dict[str, float]:
        time.sleep(0.4)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(recsys, "evaluate_split", slow)
    root = write_tiny_movielens(tmp_path / "ml")
    cfg = load_config("ml100k-lightgcn", [s for s in tiny_sets(root, **{"train.epochs": 3}) if s != "--set"])
    run = new_run_dir(cfg, str(tmp_path / "run"), resume=False)
    t0 = time.perf_counter()
    results = run_all(cfg, run, progress=False, verbose=False)
    es, train = results["early_stopping"], results["train"]
    assert es["validations"] == 3 and es["validation_seconds"] >= 1.2
    assert train["seconds"] >= es["validation_seconds"]  # all three are inside the run's time
    assert es["train_seconds"] == pytest.approx(train["seconds"] - es["validation_seconds"])
    assert 0 < es["train_seconds"] < time.perf_counter() - t0 - 1.2
    assert es["seconds_per_epoch"] == pytest.approx(es["train_seconds"] / 3)


def test_resume_continues_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_tiny_movielens(tmp_path / "ml")
    run = tmp_path / "run"
    assert main(["train", "ml100k-sgl", "--out", str(run), *tiny_sets(root, **{"train.epochs": 2})]) == 0
    first = json.loads((run / "results.json").read_text())
    assert main(["train", "--out", str(run), "--resume", "--set", "train.epochs=4"]) == 0
    second = json.loads((run / "results.json").read_text())
    assert second["train"]["steps"] == 2 * first["train"]["steps"]
    assert len((run / "validation_log.csv").read_text().splitlines()) == 1 + 4
    capsys.readouterr()


def test_config_and_data_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UserError, match=r"unknown method.name 'simgc' \(did you mean 'simgcl'\?\)"):
        load_config("ml100k-lightgcn", ["method.name=simgc"])
    with pytest.raises(UserError, match=r"^recsys.model has moved: use method.name"):
        load_config("ml100k-lightgcn", ["recsys.model=simgcl"])
    with pytest.raises(UserError, match=r"^method.noise_eps is not an option of lightgcn; its options are: embedding_dim, reg, layers$"):
        load_config("ml100k-lightgcn", ["method.noise_eps=0.1"])
    with pytest.raises(UserError, match=r"K=20 is not in recsys.eval_ks"):
        load_config("ml100k-lightgcn", ["recsys.eval_ks=[10]"])
    with pytest.raises(UserError, match="split_ratios must be 3 numbers"):
        load_config("ml100k-lightgcn", ["recsys.split_ratios=[0.5, 0.2]"])
    csv_file = tmp_path / "events.csv"
    csv_file.write_text("uid,iid\n1,2\n1,3\n")
    assert main(["train", "ml100k-lightgcn", "--out", str(tmp_path / "r"), "--set", f"recsys.data={csv_file}",
                 "--set", "recsys.rating_threshold=null"]) == 2
    err = capsys.readouterr().err.strip()
    assert "column 'user_id' not found" in err and "uid, iid" in err and len(err.splitlines()) == 1
    root = write_tiny_movielens(tmp_path / "ml")
    assert main(["train", "ml100k-lightgcn", "--out", str(tmp_path / "r2"), *tiny_sets(root, **{
        "recsys.rating_threshold": 6})]) == 2
    assert "no interactions left after filtering (rating >= 6.0" in capsys.readouterr().err
    assert main(["train", "ml100k-lightgcn", "--out", str(tmp_path / "r3"), "--set", "recsys.root=/nonexistent"]) == 2
    assert "ml-100k not found" in capsys.readouterr().err


@pytest.mark.skipif(not (ML100K / "u.data").is_file(), reason=f"MovieLens 100K not found at {ML100K} (shared data)")
@pytest.mark.parametrize("model", ["lightgcn", "simgcl"])
def test_ml100k_slice_beats_popularity(tmp_path: Path, model: str) -> None:
    """200 users of MovieLens 100K, random 80/10/10 split, full ranking: NDCG@20 above popularity."""
    contrast = ["method.cl_weight=0.05", "method.noise_eps=0.05"] if model == "simgcl" else []
    cfg = load_config(f"ml100k-{model}", [
        f"recsys.root={ML100K}", "recsys.max_users=200", "train.epochs=15", "recsys.eval_every=5",
        "recsys.patience=2", "recsys.min_epochs=0", "train.batch_size=256", "optim.lr=0.01",
        "train.progress=false", *contrast,
    ])
    run = new_run_dir(cfg, str(tmp_path / model), resume=False)
    results = run_all(cfg, run, progress=False, verbose=False)
    test = results["eval"]["test"]
    assert test[model]["users"] >= 150
    ours, pop = test[model]["ndcg@20"], test["popularity"]["ndcg@20"]
    assert ours > pop * 1.25, (ours, pop)
    data = json.loads((run / "data" / "ids.json").read_text())
    assert data["item_titles"][0]  # titles read from the RecBole item file next to u.data
