"""data.crops: views of several sizes. The loader yields the global views (the training size)
first, then the local ones, each group drawn by its own augmentation from the one checkpointed
generator (so a resumed run sees the same views); a single group is data.views bit for bit; a
bad spec is one line."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import torch

from contrastkit.cli import main
from contrastkit.data.image import load_image_dataset
from contrastkit.data.image.loader import InMemoryViewLoader, augmentation_generator
from contrastkit.data.image.spec import DataConfig, view_options
from contrastkit.data.image.stream import StreamViewLoader, open_folder_stream
from contrastkit.errors import UserError
from contrastkit.recipes import load_config

from .test_stream import _folder

pytestmark = pytest.mark.usefixtures("one_thread")

AUGMENT = [{"op": "random_resized_crop", "scale": [0.5, 1.0], "ratio": [0.8, 1.25]},
           {"op": "color_jitter", "brightness": 0.4, "contrast": 0.4, "p": 0.8},
           {"op": "gaussian_noise", "std": 0.05, "p": 0.5}]
CROPS = [{"count": 2, "size": 8, "scale": [0.5, 1.0]},
         {"count": 3, "size": 4, "scale": [0.1, 0.4]},
         {"count": 1, "size": 2, "scale": [0.05, 0.1], "augment": ["horizontal_flip"]}]


def _digits_loader(crops: list[dict[str, Any]] | None, **extra: Any) -> InMemoryViewLoader:
    data = load_image_dataset("digits")
    d = DataConfig(name="digits", augment=AUGMENT, crops=crops)
    return InMemoryViewLoader(data.images, batch_size=16, seed=5, labels=data.labels, **view_options(d, data, "cpu"),
                              **extra)


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["index"], y["index"]) and x["global_views"] == y["global_views"]
        assert len(x["views"]) == len(y["views"])
        for vx, vy in zip(x["views"], y["views"], strict=True):
            assert torch.equal(vx, vy)


def test_crop_views_come_global_first_group_by_group_and_resume_exactly() -> None:
    loader = _digits_loader(CROPS)
    batches = list(islice(loader.batches(0), 5))
    first = batches[0]
    assert first["global_views"] == 2 and loader.views == 6
    assert [tuple(v.shape) for v in first["views"]] == [(16, 1, 8, 8)] * 2 + [(16, 1, 4, 4)] * 3 + [(16, 1, 2, 2)]
    # each view is its group's augmentation, drawn in order from the one generator
    gen = augmentation_generator(torch.device("cpu"), 5, 0)
    x = loader.images.index_select(0, first["index"])
    expected = [g.augmentation(x, gen) for g in loader.groups for _ in range(g.count)]
    for got, want in zip(first["views"], expected, strict=True):
        assert torch.equal(got, want)
    assert not torch.equal(first["views"][0], first["views"][1])
    # a group's own augment replaces the data's ops: only the crop and the flip, no noise or jitter
    last_group = loader.groups[2].augmentation
    assert len(last_group.ops) == 1  # type: ignore[attr-defined]
    # resume after two batches: the checkpointed generator gives the same remaining batches
    loader = _digits_loader(CROPS)
    state = None
    for step, _ in enumerate(loader.batches(0)):
        if step == 1:
            state = loader.state_dict()
            break
    resumed = _digits_loader(CROPS)
    assert state is not None
    resumed.load_state_dict(state)
    _same(batches[2:], list(islice(resumed.batches(0, start=2), 3)))


def test_one_crop_group_at_the_data_scale_is_data_views_bit_for_bit() -> None:
    views = list(islice(_digits_loader(None).batches(0), 10))
    crops = list(islice(_digits_loader([{"count": 2, "size": 8, "scale": [0.5, 1.0]}]).batches(0), 10))
    _same(views, crops)
    assert views[0]["global_views"] == 2


def test_streamed_crops_equal_in_memory_crops(tmp_path: Path) -> None:
    root = _folder(tmp_path / "f")
    with pytest.warns(UserWarning, match="corrupt"):
        memory = load_image_dataset("folder", root=str(root), image_size=12)
    with pytest.warns(UserWarning, match="unreadable header"):
        stream = open_folder_stream("train", str(root), 12)
    d = DataConfig(name="folder", root=str(root), image_size=12,
                   crops=[{"count": 2, "size": 12, "scale": [0.4, 1]}, {"count": 2, "size": 6, "scale": [0.1, 0.4]}])
    common: dict[str, Any] = {"batch_size": 8, "seed": 3, "labels": memory.labels}
    a = InMemoryViewLoader(memory.images, **common, **view_options(d, memory, "cpu"))
    b = StreamViewLoader(stream, workers=0, **common, **view_options(d, stream, "cpu"))
    _same(list(a.batches(1)), list(b.batches(1)))


CROP8 = "{count: 2, size: 8, scale: [0.5, 1]}"
OWN_CROP = "{op: random_resized_crop, scale: [0, 1]}"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([f"data.crops=[{CROP8}]", "data.views=4"],
         "data.views 4 and data.crops both give the views of a step; give one"),
        ([f"data.crops=[{CROP8}]", "data.image_size=16"],
         "data.crops[0].size 8 must equal data.image_size 16 (the training size): the first group holds the global views"),
        (["data.crops=[]"], "data.crops is empty; give the global group first"),
        ([f"data.crops=[{CROP8}, {{count: 4, size: 8, scale: [0.1, 0.4]}}]"],
         "data.crops[1].size 8 must be smaller than the global size 8 of data.crops[0]"),
        (["data.crops=[{count: 1, size: 8, scale: [0.5, 1]}]"], "data.crops gives 1 view per image; a step needs at least 2"),
        (["data.crops=[{count: 2, size: 8, scales: [0.5, 1]}]"], "data.crops[0]: unknown key 'scales' (did you mean 'scale'?)"),
        (["data.crops=[{count: 2, size: 8}]"], "data.crops[0] needs scale"),
        (["data.crops=[{count: 0, size: 8, scale: [0.5, 1]}]"], "data.crops[0].count must be a positive integer, got 0"),
        (["data.crops=[{count: 2, size: 8, scale: [0.6, 0.5]}]"],
         "data.crops[0].scale must be [low, high] with 0 < low <= high <= 1"),
        ([f"data.crops=[{CROP8}, {{count: 2, size: 4, scale: [0.1, 0.4], augment: [{OWN_CROP}]}}]"],
         "data.crops[1].augment: give the crop's scale as data.crops[1].scale"),
        (["data.crops=[{count: 2, size: 8, scale: [0.5, 1]}, {count: 4, size: 4, scale: [0.1, 0.4]}]", "method.name=moco_v2"],
         "method moco_v2 trains on exactly 2 views of one size and data.crops gives 6 views of 2 sizes; the methods "
         "that take more views and multi-crop (data.crops): byol, dino, nnclr, simclr, supcon, swav"),
    ],
)
def test_bad_crops_are_one_line_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(UserError) as info:
        load_config("digits-simclr", overrides)
    assert str(info.value).startswith(message) and "\n" not in str(info.value), str(info.value)


def test_bad_crops_at_training_start_are_one_line_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What only the data tells (its size; ops that do not fit a group's size): exit 2, one line."""
    for k, (crops, message) in enumerate([
        ("[{count: 2, size: 16, scale: [0.5, 1]}]", "data.crops[0].size 16 must be the training size 8"),
        (f"[{CROP8}, {{count: 2, size: 2, scale: [0.1, 0.4], augment: [{{op: gaussian_blur, kernel_size: 5}}]}}]",
         "data.crops[1] (size 2): augmentation gaussian_blur: kernel_size must be an odd integer in [3, 3], got 5"),
    ]):
        code = main(["train", "digits-simclr", "--set", f"data.crops={crops}", "--set", "train.max_steps=1",
                     "--out", str(tmp_path / f"run{k}")])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err
