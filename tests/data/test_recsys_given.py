"""recsys.split=given: published train / valid / test files in the pairs, lists and table layouts,
one id vocabulary across them, unseen users / items dropped and reported, one-line errors, a tiny
run end to end, and the SELFRec Amazon Beauty split (shared data)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from contrastkit.cli import main
from contrastkit.data.interactions import InteractionData, load_given
from contrastkit.data.interactions.spec import load_data
from contrastkit.errors import UserError
from contrastkit.recipes import load_config

from ..conftest import SHARED_DATA

BEAUTY = SHARED_DATA / "amazon-beauty"

pytestmark = pytest.mark.usefixtures("one_thread")

# string ids: one vocabulary from train, every file mapped through it by the raw id text
TRAIN = [("u1", "a"), ("u1", "b"), ("u2", "b"), ("u2", "c"), ("u3", "a"), ("u3", "c"), ("u3", "d")]
VALID = [("u1", "c"), ("u2", "a"), ("u9", "a"), ("u3", "z")]  # u9 and z are not in train
TEST = [("u1", "d"), ("u2", "d"), ("u3", "b"), ("u8", "b"), ("u1", "y"), ("u2", "y"), ("u1", "a")]
# test: u8 unseen (1 row), y unseen (2 rows), (u1, a) already in train


def _write_pairs(path: Path, rows: list[tuple[str, str]], sep: str = " ") -> Path:
    path.write_text("".join(f"{u}{sep}{i}{sep}1\n" for u, i in rows))
    return path


def _write_lists(path: Path, rows: list[tuple[str, str]]) -> Path:
    by_user: dict[str, list[str]] = {}
    for u, i in rows:
        by_user.setdefault(u, []).append(i)
    path.write_text("".join(f"{u} {' '.join(items)}\n" for u, items in by_user.items()))
    return path


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("user_id,item_id,rating\n" + "".join(f"{u},{i},5\n" for u, i in rows))
    return path


WRITERS = {"pairs": (_write_pairs, ".txt"), "lists": (_write_lists, ".txt"), "csv": (_write_csv, ".csv")}


def _raw_pairs(data: InteractionData, part: np.ndarray) -> set[tuple[str, str]]:
    return {(data.user_ids[u], data.item_ids[i]) for u, i in part.tolist()}


def _files(folder: Path, layout: str) -> tuple[Path, Path, Path]:
    write, suffix = WRITERS[layout]
    splits = (("train", TRAIN), ("valid", VALID), ("test", TEST))
    train, valid, test = (write(folder / f"{n}{suffix}", rows) for n, rows in splits)
    return train, valid, test


# lists with at most 2 items per user read as pairs under auto (no line has > 3 fields): named
# here, auto-detected in the next test
@pytest.mark.parametrize(("layout", "fmt"), [("pairs", "auto"), ("pairs", "named"), ("lists", "named"),
                                             ("csv", "auto"), ("csv", "named")])
def test_given_split_holds_exactly_the_given_pairs(tmp_path: Path, layout: str, fmt: str) -> None:
    train, valid, test = _files(tmp_path, layout)
    with pytest.warns(UserWarning, match=r"^given split: dropped .*valid: 2 interactions of 1 users / 1 items not in "
                      r"train, 0 pairs already in train; test: 3 interactions of 1 users / 1 items not in train, "
                      r"1 pairs already in train or valid$"):
        data = load_given(
            train, valid, test, format=layout if fmt == "named" else "auto", rating_threshold=None, time_column=None
        )
    assert data.user_ids == ["u1", "u2", "u3"] and data.item_ids == ["a", "b", "c", "d"]
    assert _raw_pairs(data, data.train) == set(TRAIN) and data.train.shape[0] == len(TRAIN)
    assert _raw_pairs(data, data.valid) == {("u1", "c"), ("u2", "a")}
    assert _raw_pairs(data, data.test) == {("u1", "d"), ("u2", "d"), ("u3", "b")}
    s = data.stats
    assert (s["valid_unseen_users"], s["valid_unseen_items"], s["valid_dropped_unseen"]) == (1, 1, 2)
    assert (s["test_unseen_users"], s["test_unseen_items"], s["test_dropped_unseen"]) == (1, 1, 3)
    assert s["test_dropped_seen_before"] == 1 and s["valid_dropped_seen_before"] == 0
    assert (s["users_in_files"], s["items_in_files"]) == (5, 6)
    assert (s["users"], s["items"], s["train"], s["valid"], s["test"]) == (3, 4, 7, 2, 3)
    assert s["given_format"] == layout


def test_lists_auto_detected_and_same_ids_across_files(tmp_path: Path) -> None:
    # numeric ids: natural order (2 before 10), and the same raw id maps to the same index everywhere
    (tmp_path / "train.txt").write_text("10 5 7 9 12 13 14 15 16 17 18\n2 7 5\n3 9\n")
    (tmp_path / "test.txt").write_text("10 11\n2 9\n3\n3 5 7\n")
    with pytest.warns(UserWarning, match="test: 1 interactions of 0 users / 1 items not in train"):
        data = load_given(tmp_path / "train.txt", None, tmp_path / "test.txt", rating_threshold=None, seed=1)
    assert data.stats["given_format"] == "lists"
    assert data.user_ids == ["2", "3", "10"] and data.item_ids == ["5", "7", "9", *map(str, range(12, 19))]
    assert _raw_pairs(data, data.test) == {("2", "9"), ("3", "5"), ("3", "7")}
    assert data.stats["test_unseen_items"] == 1 and data.stats["test_dropped_unseen"] == 1
    # no valid file: carved from train (disjoint, together exactly train's pairs)
    given_train = {("10", i) for i in ["5", "7", "9", *map(str, range(12, 19))]} | {("2", "7"), ("2", "5"), ("3", "9")}
    train, valid = _raw_pairs(data, data.train), _raw_pairs(data, data.valid)
    assert train | valid == given_train and not train & valid and valid
    assert data.stats["valid_carved_from_train"] == len(valid)


def test_ratings_threshold_and_duplicates_apply_per_file(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("1\t1\t5\n1\t2\t2\n2\t1\t4\n2\t2\t5\n2\t2\t5\n3\t3\t5\n")
    (tmp_path / "valid.txt").write_text("1\t3\t5\n2\t3\t1\n")
    (tmp_path / "test.txt").write_text("1\t2\t4\n2\t3\t5\n")
    with pytest.warns(UserWarning, match="1 duplicate"):
        data = load_given(*(tmp_path / f"{n}.txt" for n in ("train", "valid", "test")), rating_threshold=4)
    assert _raw_pairs(data, data.train) == {("1", "1"), ("2", "1"), ("2", "2"), ("3", "3")}
    assert _raw_pairs(data, data.valid) == {("1", "3")}  # (2, 3) rated 1: not a positive
    assert _raw_pairs(data, data.test) == {("1", "2"), ("2", "3")}  # (1, 2) was below the threshold in train
    assert data.stats["train_duplicates_dropped"] == 1 and data.stats["train_rows_read"] == 6


def _cli_sets(root: Path, **extra: object) -> list[str]:
    base: dict[str, object] = {
        "recsys.split": "given", "recsys.root": str(root), "recsys.train_file": "train.txt",
        "recsys.valid_file": "valid.txt", "recsys.test_file": "test.txt", "recsys.rating_threshold": "null",
        "recsys.eval_ks": "[5, 10]", "recsys.valid_metric": "ndcg@10", "method.embedding_dim": 8,
        "train.batch_size": 64, "train.epochs": 2, "train.progress": False,
    }
    base.update(extra)
    return [a for k, v in base.items() for a in ("--set", f"{k}={v}")]


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _files(tmp_path, "pairs")
    runs = iter(range(100))

    def fails(*sets: str, expect: str) -> None:
        assert main(["train", "ml100k-lightgcn", "--out", str(tmp_path / f"run{next(runs)}"), *sets]) == 2
        err = capsys.readouterr().err.strip()
        assert expect in err and len(err.splitlines()) == 1, err

    fails(*_cli_sets(tmp_path, **{"recsys.train_file": "null"}), expect="split=given needs recsys.train_file")
    fails(*_cli_sets(tmp_path, **{"recsys.test_file": "nope.txt"}), expect=f"{tmp_path / 'nope.txt'}' does not exist")
    (tmp_path / "valid.txt").write_text("u1 a 1\nu2 b\n")
    fails(*_cli_sets(tmp_path), expect=f"{tmp_path / 'valid.txt'}:2: expected 3 fields (user item rating) like line 1, got 2")
    (tmp_path / "valid.txt").write_text("u1 a 1\nu2 b x\n")
    fails(*_cli_sets(tmp_path), expect=f"{tmp_path / 'valid.txt'}:2: rating / timestamp must be numbers")
    fails(*_cli_sets(tmp_path, **{"recsys.min_user_interactions": 5}), expect="k-core filtering would change it")
    with pytest.raises(UserError, match=r"unknown recsys\.given_format 'selfrec'"):
        load_config("ml100k-lightgcn", ["recsys.given_format=selfrec"])


def _tiny_groups(folder: Path, n_users: int = 30, n_items: int = 24) -> Path:
    """Two taste groups (even / odd items); 6 train, 1 valid, 2 test items per user; plus one
    test-only user and one test-only item."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for u in range(n_users):
        liked = rng.permutation(np.arange(u % 2, n_items, 2))
        for name, chunk in (("train", liked[:6]), ("valid", liked[6:7]), ("test", liked[7:9])):
            parts[name] += [f"{u} {i} 1" for i in chunk]
    parts["test"] += [f"{n_users} 0 1", f"0 {n_items} 1"]
    for name, lines in parts.items():
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_cli_train_given_split_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tiny_groups(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "amazon-beauty-lightgcn", "--out", str(run), *_cli_sets(root, **{
        "recsys.eval_every": 1, "train.epochs": 3, "optim.lr": 0.02, "method.reg": 0.001})]) == 0
    captured = capsys.readouterr()
    dropped = [line for line in captured.err.splitlines() if "given split: dropped" in line]
    assert len(dropped) == 1 and "test: 2 interactions of 1 users / 1 items not in train" in dropped[0]
    results = json.loads((run / "results.json").read_text())
    stats = results["eval"]["data"]
    assert (stats["users"], stats["items"], stats["train"], stats["valid"], stats["test"]) == (30, 24, 180, 30, 60)
    assert (stats["test_unseen_users"], stats["test_unseen_items"], stats["test_dropped_unseen"]) == (1, 1, 2)
    assert results["eval"]["protocol"].startswith("given split train.txt / valid.txt / test.txt")
    test = results["eval"]["test"]
    assert set(test) == {"lightgcn", "popularity"} and test["lightgcn"]["users"] == 30
    saved = InteractionData.load(run / "data")
    assert saved.user_ids[:3] == ["0", "1", "2"] and saved.stats["test_dropped_unseen"] == 2
    assert main(["recommend", str(run), "--user", "3", "--k", "3"]) == 0


@pytest.mark.skipif(not (BEAUTY / "train.txt").is_file(), reason=f"Amazon Beauty (SELFRec split) not found at {BEAUTY} "
    "(shared data)")
def test_amazon_beauty_loads_with_the_published_counts() -> None:
    cfg = load_config("amazon-beauty-lightgcn", [f"recsys.root={BEAUTY}"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_data(cfg.recsys, cfg.train.seed)
    s = data.stats
    assert (s["users_in_files"], s["items_in_files"]) == (52204, 57289)
    assert (s["train_rows_read"], s["valid_rows_read"], s["test_rows_read"]) == (284530, 29796, 80582)
    # 4,396 items occur only in valid / test: the model knows the 52,893 items of train
    assert (s["users"], s["items"], s["train"]) == (52204, 52893, 284530)
    assert s["valid"] + s["valid_dropped_unseen"] + s["valid_dropped_seen_before"] == 29796
    assert s["test"] + s["test_dropped_unseen"] + s["test_dropped_seen_before"] == 80582
    assert s["valid_unseen_users"] == s["test_unseen_users"] == 0
    assert [str(w.message) for w in caught if "given split" in str(w.message)]
    assert data.user_ids[:3] == ["0", "1", "2"] and data.item_ids[100] == "100"
