"""Image data sets: digits split, IDX reader, Fashion-MNIST folders, image folders, errors."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import write_png

from contrastkit.data.image import DATASETS, ImageDataset, load_image_dataset, read_idx
from contrastkit.data.image.datasets import DEBIAN_FASHION_MNIST, FASHION_MNIST_CLASSES
from contrastkit.errors import UserError

# torchvision 0.29 deprecates write_png/decode_image in favour of torchcodec (not a dependency)
pytestmark = [pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning"), pytest.mark.usefixtures("one_thread")]

# ----------------------------------------------------------------------------- digits


def _rows(ds: ImageDataset) -> Counter[tuple[bytes, int]]:
    assert ds.labels is not None
    return Counter(
        (img.numpy().tobytes(), int(y)) for img, y in zip(ds.images, ds.labels, strict=True)
    )


def test_digits_shapes_split_and_determinism() -> None:
    from sklearn.datasets import load_digits

    train = load_image_dataset("digits", "train")
    test = load_image_dataset("digits", "test")
    assert train.images.shape == (1437, 1, 8, 8) and test.images.shape == (360, 1, 8, 8)
    assert train.images.dtype == torch.uint8 and train.images.is_contiguous()
    assert train.labels is not None and train.labels.dtype == torch.int64
    assert train.channels == 1 and train.image_size == 8 and train.num_classes == 10
    assert train.classes == [str(i) for i in range(10)]
    # train + test is exactly the full data set (a partition), scaled 0..16 → 0..255
    bunch = load_digits()
    full = np.rint(bunch.data * 255 / 16).astype(np.uint8).reshape(-1, 1, 8, 8)
    expected = Counter((img.tobytes(), int(y)) for img, y in zip(full, bunch.target, strict=True))
    assert _rows(train) + _rows(test) == expected
    assert int(train.images.max()) == 255
    # stratified: each class has ~20 % of its images in test
    assert test.labels is not None
    for c, n in Counter(bunch.target.tolist()).items():
        assert abs(int((test.labels == c).sum()) - 0.2 * n) <= 1
    again = load_image_dataset("digits", "test")
    assert torch.equal(again.images, test.images) and again.labels is not None
    assert torch.equal(again.labels, test.labels)


def test_mean_std_subset_and_resize() -> None:
    ds = load_image_dataset("digits", "test")
    x = ds.images.double() / 255
    assert ds.mean() == pytest.approx([float(x.mean())], abs=1e-9)
    assert ds.std() == pytest.approx([float(x.std(unbiased=False))], abs=1e-9)
    assert ds.mean() is ds.mean()  # cached
    idx = torch.tensor([5, 0, 7])
    sub = ds.subset(idx)
    assert torch.equal(sub.images, ds.images[idx]) and sub.labels is not None
    assert ds.labels is not None and torch.equal(sub.labels, ds.labels[idx])
    mask = ds.labels == 3
    assert len(ds.subset(mask)) == int(mask.sum())
    big = load_image_dataset("digits", "test", image_size=16)
    assert big.images.shape == (360, 1, 16, 16) and big.images.dtype == torch.uint8


# ----------------------------------------------------------------------------- IDX files


def _idx_bytes(arr: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_plain_and_gzip(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    cases = [
        (rng.integers(0, 256, (5, 3, 4), dtype=np.uint8), 0x08, "u1"),
        (rng.integers(-1000, 1000, (7,)).astype(">i4"), 0x0C, ">i4"),
        (rng.standard_normal((2, 3)).astype(">f4"), 0x0D, ">f4"),
    ]
    for i, (arr, code, _) in enumerate(cases):
        data = _idx_bytes(arr, code)
        path = tmp_path / (f"a{i}.idx" + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data) if gz else data)
        out = read_idx(path)
        assert out.shape == arr.shape
        np.testing.assert_array_equal(out, arr.astype(arr.dtype.newbyteorder("=")))


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x07\x01abcd")
    with pytest.raises(UserError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(_idx_bytes(np.zeros((4, 2), np.uint8), 0x08)[:-3])
    with pytest.raises(UserError, match="expected 8"):
        read_idx(short)


def _write_fashion(folder: Path, gz: bool, n_train: int = 12, n_test: int = 6) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr, dims in (("images", images, 3), ("labels", labels, 1)):
            data = _idx_bytes(arr, 0x08)
            name = f"{prefix}-{kind}-idx{dims}-ubyte"
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_from_generated_folder(tmp_path: Path, gz: bool) -> None:
    _write_fashion(tmp_path, gz)
    train = load_image_dataset("fashion-mnist", "train", root=str(tmp_path))
    test = load_image_dataset("fashion-mnist", "test", root=str(tmp_path))
    assert train.images.shape == (12, 1, 28, 28) and test.images.shape == (6, 1, 28, 28)
    assert test.labels is not None and test.labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert train.classes == FASHION_MNIST_CLASSES
    expected = read_idx(next(tmp_path.glob("train-images*")))
    assert torch.equal(train.images[:, 0], torch.from_numpy(expected))


def test_fashion_mnist_torchvision_layout(tmp_path: Path) -> None:
    _write_fashion(tmp_path / "FashionMNIST" / "raw", gz=False)
    ds = load_image_dataset("fashion-mnist", "test", root=str(tmp_path))
    assert len(ds) == 6


@pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist is not installed",
)
def test_fashion_mnist_debian_folder() -> None:
    ds = load_image_dataset("fashion-mnist", "test")
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.labels is not None and torch.bincount(ds.labels).tolist() == [1000] * 10
    assert 0.2 < ds.mean()[0] < 0.4


def test_missing_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"apt-get install dataset-fashion-mnist.*data\.download"):
        load_image_dataset("fashion-mnist", root=str(tmp_path / "nope"))
    with pytest.raises(UserError, match="cifar-10-batches-py"):
        load_image_dataset("cifar10", root=str(tmp_path))
    with pytest.raises(UserError, match="stl10_binary"):
        load_image_dataset("stl10", "unlabeled", root=str(tmp_path))
    with pytest.raises(UserError, match="did you mean 'fashion-mnist'"):
        load_image_dataset("fashion_mnist")
    with pytest.raises(UserError, match="unlabeled"):
        load_image_dataset("digits", "unlabeled")
    with pytest.raises(UserError, match="image_size"):
        load_image_dataset("digits", image_size=0)
    assert set(DATASETS) == {"digits", "fashion-mnist", "cifar10", "cifar100", "stl10", "folder", "store"}


# ----------------------------------------------------------------------------- image folders


def _png(path: Path, pixels: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(pixels, str(path))


def _solid(c: int, h: int, w: int, values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.uint8).view(c, 1, 1).expand(c, h, w).contiguous()


def test_folder_with_classes_corrupt_file_and_mixed_channels(tmp_path: Path) -> None:
    _png(tmp_path / "cat" / "a.png", _solid(3, 20, 30, [255, 0, 0]))
    _png(tmp_path / "cat" / "b.png", _solid(3, 40, 40, [255, 0, 0]))
    _png(tmp_path / "dog" / "c.png", _solid(1, 24, 24, [128]))  # grayscale → repeated to RGB
    _png(tmp_path / "dog" / "sub" / "d.png", _solid(3, 16, 16, [0, 0, 255]))
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        ds = load_image_dataset("folder", root=str(tmp_path), image_size=16)
    assert ds.classes == ["cat", "dog"] and ds.images.shape == (4, 3, 16, 16)
    assert ds.labels is not None and ds.labels.tolist() == [0, 0, 1, 1]
    assert torch.equal(ds.images[0], _solid(3, 16, 16, [255, 0, 0]))
    assert torch.equal(ds.images[2], _solid(3, 16, 16, [128, 128, 128]))
    assert torch.equal(ds.images[3], _solid(3, 16, 16, [0, 0, 255]))


def test_folder_flat_grayscale_and_center_crop(tmp_path: Path) -> None:
    wide = _solid(1, 20, 40, [200])
    wide[:, :, :10] = 0  # left quarter black: cut away by the centre crop
    wide[:, :, 30:] = 0
    _png(tmp_path / "wide.png", wide)
    _png(tmp_path / "small.png", _solid(1, 10, 10, [50]))
    ds = load_image_dataset("folder", root=str(tmp_path), image_size=20)
    assert ds.labels is None and ds.classes == [] and ds.images.shape == (2, 1, 20, 20)
    assert torch.equal(ds.images[1], _solid(1, 20, 20, [200]))
    assert torch.equal(ds.images[0], _solid(1, 20, 20, [50]))


def test_folder_split_subfolders(tmp_path: Path) -> None:
    _png(tmp_path / "train" / "a" / "x.png", _solid(1, 8, 8, [1]))
    _png(tmp_path / "train" / "b" / "x.png", _solid(1, 8, 8, [2]))
    _png(tmp_path / "test" / "a" / "x.png", _solid(1, 8, 8, [3]))
    train = load_image_dataset("folder", "train", root=str(tmp_path), image_size=8)
    test = load_image_dataset("folder", "test", root=str(tmp_path), image_size=8)
    assert train.classes == ["a", "b"] and len(train) == 2
    assert test.classes == ["a"] and int(test.images[0, 0, 0, 0]) == 3
    with pytest.raises(UserError, match="no 'val'"):
        load_image_dataset("folder", "val", root=str(tmp_path))


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"needs data\.root"):
        load_image_dataset("folder")
    with pytest.raises(UserError, match="does not exist"):
        load_image_dataset("folder", root=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no image files"):
        load_image_dataset("folder", root=str(tmp_path / "empty"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.jpg").write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(UserError, match="could be decoded"):
        load_image_dataset("folder", root=str(tmp_path / "junk"))
