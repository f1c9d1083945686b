"""Interaction readers, cleaning, splits and the BPR loader, on small generated fixtures."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastkit.data.interactions import (
    BPRLoader,
    InteractionData,
    build_interaction_data,
    clean,
    k_core,
    read_interactions,
    split_interactions,
)
from contrastkit.errors import UserError

ROWS = [  # user, item, rating, timestamp
    (1, 10, 5, 100),
    (1, 20, 3, 101),
    (2, 10, 4, 102),
    (2, 30, 1, 103),
    (3, 20, 5, 104),
]

pytestmark = pytest.mark.usefixtures("one_thread")


def _check_rows(raw: object) -> None:
    from contrastkit.data.interactions import RawInteractions

    assert isinstance(raw, RawInteractions)
    got = sorted(
        (raw.user_ids[u], raw.item_ids[i], float(r), float(t))
        for u, i, r, t in zip(raw.users, raw.items, raw.ratings, raw.timestamps, strict=True)  # type: ignore[arg-type]
    )
    want = sorted((str(u), str(i), float(r), float(t)) for u, i, r, t in ROWS)
    assert got == want


def test_ml100k_reader_with_titles(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ROWS))
    (tmp_path / "u.item").write_bytes(
        "10|Caf\xe9 Society (1995)|01-Jan-1995||http://x|0|1\n20|Heat (1995)|x\n30|Up (2009)|x\n".encode("latin-1")
    )
    raw = read_interactions(tmp_path)
    _check_rows(raw)
    assert raw.item_titles["10"] == "Café Society (1995)"
    assert raw.item_titles["20"] == "Heat (1995)"


def test_movielens_dat_reader(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ROWS))
    (tmp_path / "movies.dat").write_text("10::Alien (1979)::Horror\n20::Heat (1995)::Crime\n")
    raw = read_interactions(tmp_path / "ratings.dat")
    _check_rows(raw)
    assert raw.item_titles == {"10": "Alien (1979)", "20": "Heat (1995)"}


def test_movielens_csv_reader(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r}.0,{t}\n" for u, i, r, t in ROWS)
    )
    (tmp_path / "movies.csv").write_text('movieId,title,genres\n10,"Good, Bad (1966)",Western\n')
    raw = read_interactions(tmp_path)
    _check_rows(raw)
    assert raw.item_titles["10"] == "Good, Bad (1966)"


def test_recbole_reader_with_item_file(tmp_path: Path) -> None:
    inter = tmp_path / "toy.inter"
    inter.write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ROWS)
    )
    (tmp_path / "toy.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\n10\tAlien\t1979\n"
    )
    raw = read_interactions(inter)
    _check_rows(raw)
    assert raw.item_titles["10"] == "Alien (1979)"


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_generic_table_with_named_columns(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"events{suffix}"
    cols = {"who": [str(r[0]) for r in ROWS], "what": [f"{r[1]}" for r in ROWS],
            "stars": [float(r[2]) for r in ROWS], "when": [float(r[3]) for r in ROWS]}
    if suffix == ".parquet":
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        pq.write_table(pa.table(cols), path)
    else:
        sep = "," if suffix == ".csv" else "\t"
        lines = [sep.join(cols)] + [sep.join(str(cols[c][j]) for c in cols) for j in range(len(ROWS))]
        path.write_text("\n".join(lines) + "\n")
    raw = read_interactions(path, user_column="who", item_column="what", rating_column="stars", time_column="when")
    _check_rows(raw)


def test_missing_column_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("user,item\n1,2\n")
    with pytest.raises(UserError, match=r"column 'user_id' not found .*columns there: user, item") as info:
        read_interactions(path, rating_column=None, time_column=None)
    assert "\n" not in str(info.value)


def test_format_cannot_be_guessed(tmp_path: Path) -> None:
    path = tmp_path / "events.xyz"
    path.write_text("1 2\n")
    with pytest.raises(UserError, match=r"recsys\.format"):
        read_interactions(path)


def _raw(rows: list[tuple[int, int, float, float]]) -> object:
    from contrastkit.data.interactions import RawInteractions

    arr = np.asarray(rows, dtype=np.float64)
    uid, u = np.unique(arr[:, 0].astype(int), return_inverse=True)
    iid, i = np.unique(arr[:, 1].astype(int), return_inverse=True)
    return RawInteractions(
        users=u.astype(np.int64), items=i.astype(np.int64),
        user_ids=np.asarray([str(x) for x in uid], dtype=object),
        item_ids=np.asarray([str(x) for x in iid], dtype=object),
        ratings=arr[:, 2], timestamps=arr[:, 3], source="fixture",
    )


def test_threshold_duplicates_and_k_core() -> None:
    rows = [(1, 1, 5, 1), (1, 2, 5, 2), (1, 1, 4, 9), (2, 1, 5, 3), (2, 2, 2, 4), (3, 3, 5, 5)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raw, stats = clean(_raw(rows), rating_threshold=4, min_user_interactions=0)  # type: ignore[arg-type]
    assert stats["after_threshold"] == 5 and stats["duplicates_dropped"] == 1
    assert any("1 duplicate" in str(w.message) for w in caught)
    # the later duplicate (timestamp 9) is kept
    assert 9.0 in raw.timestamps.tolist() and 1.0 not in raw.timestamps.tolist()  # type: ignore[union-attr]
    # 2-core: user 3 and item 3 have one interaction each, user 2 then keeps only item 1 -> dropped
    core = k_core(raw, 2, 2)
    users = {raw.user_ids[u] for u in core.users}
    assert users == set() or all(np.bincount(core.users)[np.unique(core.users)] >= 2)
    with pytest.raises(UserError, match=r"no interactions left after filtering \(rating >= 6"):
        clean(_raw(rows), rating_threshold=6)  # type: ignore[arg-type]


def test_k_core_reaches_a_fixed_point() -> None:
    rng = np.random.default_rng(0)
    rows = [(int(u), int(i), 5.0, 0.0) for u, i in zip(rng.integers(0, 60, 400), rng.zipf(1.6, 400) % 80, strict=True)]
    with pytest.warns(UserWarning, match="duplicate"):
        raw, _ = clean(_raw(rows), rating_threshold=None)  # type: ignore[arg-type]
    core = k_core(raw, 3, 4)
    assert len(core) > 0
    assert np.bincount(core.users)[np.unique(core.users)].min() >= 3
    assert np.bincount(core.items)[np.unique(core.items)].min() >= 4


@pytest.mark.parametrize("kind", ["random", "temporal", "leave_one_out"])
def test_split_invariants(kind: str) -> None:
    rng = np.random.default_rng(1)
    n_users, n_items = 50, 40
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, n_users, 900), rng.integers(0, n_items, 900), strict=True)}
    arr = np.asarray(sorted(pairs))
    times = rng.permutation(len(arr)).astype(np.float64)
    split = split_interactions(arr[:, 0], times, kind=kind, ratios=[0.8, 0.1, 0.1], seed=3)
    # a partition of the rows
    allrows = np.concatenate([split.train, split.valid, split.test])
    assert sorted(allrows.tolist()) == list(range(len(arr)))
    train = {tuple(p) for p in arr[split.train].tolist()}
    valid = {tuple(p) for p in arr[split.valid].tolist()}
    test = {tuple(p) for p in arr[split.test].tolist()}
    assert not (train & test) and not (train & valid) and not (valid & test)
    counts = np.bincount(arr[:, 0], minlength=n_users)
    for u in range(n_users):
        if counts[u] == 0:
            continue
        assert any(p[0] == u for p in train)  # every user keeps training data
    if kind == "leave_one_out":
        for u in np.unique(arr[:, 0]):
            rows = np.nonzero(arr[:, 0] == u)[0]
            if rows.size >= 3:
                last = rows[np.argsort(times[rows])]
                assert last[-1] in split.test and last[-2] in split.valid
    if kind == "temporal":
        for u in np.unique(arr[:, 0]):
            tr = times[split.train][arr[split.train, 0] == u]
            te = times[split.test][arr[split.test, 0] == u]
            if te.size:
                assert tr.max() < te.min()
    if kind == "random":
        assert 0.75 < len(split.train) / len(arr) < 0.85
        again = split_interactions(arr[:, 0], times, kind=kind, seed=3)
        np.testing.assert_array_equal(again.test, split.test)


def test_build_save_load_and_id_maps(tmp_path: Path) -> None:
    rows = [(u, i, 5.0, float(u * 10 + i)) for u in (7, 8, 9) for i in (100, 200, 300, 400, 500)]
    data = build_interaction_data(_raw(rows), rating_threshold=None, split="leave_one_out")  # type: ignore[arg-type]
    assert (data.n_users, data.n_items) == (3, 5)
    assert data.user_ids == ["7", "8", "9"] and data.item_ids == ["100", "200", "300", "400", "500"]
    assert data.test.shape == (3, 2) and data.valid.shape == (3, 2)
    # the latest item (500, largest timestamp) of every user is its test item
    assert {data.item_ids[i] for i in data.test[:, 1]} == {"500"}
    data.save(tmp_path / "d")
    back = InteractionData.load(tmp_path / "d")
    np.testing.assert_array_equal(back.train, data.train)
    assert back.user_ids == data.user_ids and back.user_index("8") == 1
    with pytest.raises(UserError, match=r"unknown user id '42'"):
        back.user_index("42")


def test_bpr_loader_negatives_and_resume() -> None:
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 20, 200), rng.integers(0, 15, 200)
    pairs = np.asarray(sorted({(int(u), int(i)) for u, i in zip(users, items, strict=True)}))
    loader = BPRLoader(pairs, 15, batch_size=32, seed=5)
    seen = {tuple(p) for p in pairs.tolist()}
    batches = list(loader.batches(0))
    assert len(batches) == len(loader) == -(-len(pairs) // 32)
    users = torch.cat([b["users"] for b in batches])
    pos = torch.cat([b["pos"] for b in batches])
    neg = torch.cat([b["neg"] for b in batches])
    assert sorted(zip(users.tolist(), pos.tolist(), strict=True)) == sorted(seen)  # each once
    assert not any((u, n) in seen for u, n in zip(users.tolist(), neg.tolist(), strict=True))
    # resuming at batch 2 of epoch 0 gives the same batches; another epoch differs
    again = list(BPRLoader(pairs, 15, batch_size=32, seed=5).batches(0, start=2))
    for a, b in zip(batches[2:], again, strict=True):
        assert torch.equal(a["neg"], b["neg"]) and torch.equal(a["users"], b["users"])
    other = next(iter(loader.batches(1)))
    assert not torch.equal(other["users"], batches[0]["users"])


def test_readers_work_without_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import contrastkit.data.interactions.readers as readers

    monkeypatch.setattr(readers, "_has_pyarrow", lambda: False)
    (tmp_path / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ROWS))
    _check_rows(read_interactions(tmp_path / "u.data"))
    path = tmp_path / "events.csv"
    path.write_text("u,i,r,t\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ROWS))
    _check_rows(read_interactions(path, user_column="u", item_column="i", rating_column="r", time_column="t"))
    with pytest.raises(UserError, match="column 'x' not found"):
        read_interactions(path, user_column="x", item_column="i", rating_column=None, time_column=None)
