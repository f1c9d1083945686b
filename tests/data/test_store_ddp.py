"""A store under DDP: each rank gathers a disjoint shard of the indices from the memory map, the
batches equal the in-memory loader's, a mid-epoch resume continues exactly, and the image task
builds each rank's loader that way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from contrastkit.data.image import build_augmentation, default_augmentation, load_image_dataset
from contrastkit.data.image.loader import InMemoryViewLoader
from contrastkit.data.image.store import open_store, prepare_store

from ..conftest import tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store") / "digits"
    prepare_store("digits", root, workers=0, progress=False)
    return root


def _loader(images: torch.Tensor, rank: int, *, resident: bool, labels: torch.Tensor) -> InMemoryViewLoader:
    aug = build_augmentation(default_augmentation(1, 8), size=8, channels=1, mean=(0.3,), std=(0.3,))
    return InMemoryViewLoader(images, resident=resident, batch_size=32, augmentation=aug, seed=5,
                              labels=labels, rank=rank, world_size=2)


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b) and a
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["index"], y["index"]) and torch.equal(x["labels"], y["labels"])
        for vx, vy in zip(x["views"], y["views"], strict=True):
            assert torch.equal(vx, vy)


def test_ranks_read_disjoint_shards_and_resume_exactly(store: Path) -> None:
    mapped = open_store(store, "train")
    memory = load_image_dataset("digits", "train")
    assert mapped.mapped and mapped.labels is not None and memory.labels is not None
    n = 400  # the first rows (a slice of the map is still the map)
    mapped_images, memory_images = mapped.images[:n], memory.images[:n]
    mapped_labels, memory_labels = mapped.labels[:n], memory.labels[:n]
    seen: list[set[int]] = []
    for rank in (0, 1):
        from_store = list(_loader(mapped_images, rank, resident=False, labels=mapped_labels).batches(1))
        _same(from_store, list(_loader(memory_images, rank, resident=True, labels=memory_labels).batches(1)))
        rows = torch.cat([b["index"] for b in from_store])
        assert rows.unique().numel() == rows.numel()  # no row twice within a rank's epoch
        seen.append(set(rows.tolist()))
        # mid-epoch: the state after 3 batches, in a new loader, gives the remaining batches
        loader = _loader(mapped_images, rank, resident=False, labels=mapped_labels)
        state = None
        full = []
        for step, batch in enumerate(loader.batches(2)):
            full.append(batch)
            if step == 2:
                state = loader.state_dict()
        resumed = _loader(open_store(store, "train").images[:n], rank, resident=False, labels=mapped_labels)
        assert state is not None
        resumed.load_state_dict(state)
        _same(full[3:], list(resumed.batches(2, start=3)))
    assert not seen[0] & seen[1]  # the two ranks' shards are disjoint
    assert len(seen[0]) == len(seen[1]) == 6 * 32  # 200 rows per rank: 6 full batches of 32


def test_the_image_task_gives_each_rank_its_shard_of_the_map(store: Path, tmp_path: Path) -> None:
    """The image task's training on a store, as the two processes of ``--nproc 2`` build it: each
    rank's batches read its own half of the rows from the memory map (the two processes
    themselves are the one loop's, tested in tests/training)."""
    from contrastkit.recipes import load_config
    from contrastkit.tasks import RunContext, get_task

    cfg = load_config(None, tiny_overrides(**{"train.batch_size": 64, "data.name": "store", "data.root": str(store)}))
    seen: list[set[int]] = []
    for rank in (0, 1):
        ctx = RunContext(cfg, tmp_path, torch.device("cpu"), rank=rank, world_size=2, verbose=False)
        loader: Any = get_task("image")(cfg).training(ctx).batches
        assert isinstance(loader, InMemoryViewLoader) and not loader.resident  # rows read from the file
        batches = list(loader.batches(0))
        assert len(batches) == len(loader) == 1437 // 64 and all(b["index"].numel() == 32 for b in batches)
        rows = torch.cat([b["index"] for b in batches])
        assert rows.unique().numel() == rows.numel()
        seen.append(set(rows.tolist()))
    assert not seen[0] & seen[1]


def test_train_classes_of_a_store_stay_mapped(store: Path) -> None:
    """data.train_classes on a store selects rows of the map (no copy); statistics and batches
    equal those of the in-memory subset."""
    mapped, memory = open_store(store, "train"), load_image_dataset("digits", "train")
    assert mapped.labels is not None and memory.labels is not None
    keep = torch.isin(mapped.labels, torch.tensor([1, 4, 7]))
    chosen, copied = mapped.select(keep), memory.subset(keep)
    assert chosen.mapped and chosen.rows is not None and chosen.images.data_ptr() == mapped.images.data_ptr()
    assert len(chosen) == len(copied) == int(keep.sum()) and chosen.labels is not None and copied.labels is not None
    assert chosen.mean() == copied.mean() and chosen.std() == copied.std()
    assert torch.equal(chosen.subset(torch.arange(5)).images, copied.images[:5])
    aug = build_augmentation(default_augmentation(1, 8), size=8, channels=1, mean=(0.3,), std=(0.3,))
    common: dict[str, Any] = {"batch_size": 32, "augmentation": aug, "seed": 2}
    _same(
        list(InMemoryViewLoader(chosen.images, resident=False, rows=chosen.rows, labels=chosen.labels, **common).batches(0)),
        list(InMemoryViewLoader(copied.images, labels=copied.labels, **common).batches(0)),
    )
