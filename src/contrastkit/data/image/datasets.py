"""The named image data sets, loaded into memory as one uint8 (N, C, H, W) tensor.

Sources: scikit-learn digits (embedded), Fashion-MNIST IDX files (Debian `dataset-fashion-mnist`
or torchvision download), CIFAR-10/100 and STL-10 through torchvision, an image folder (see
contrastkit.data.image.folders; decoded by contrastkit.data.image.decode), and a store written
by `contrastkit prepare` (memory-mapped, see contrastkit.data.image.store).
"""

from __future__ import annotations

import gzip
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrastkit.data.image.decode import decode_file, resize_center_crop, resize_uint8, to_channels
from contrastkit.data.image.folders import FOLDER_SPLITS, folder_files
from contrastkit.data.image.imageset import ImageDataset
from contrastkit.data.image.read import open_store
from contrastkit.errors import UserError, check_choice

DATASETS: tuple[str, ...] = ("digits", "fashion-mnist", "cifar10", "cifar100", "stl10", "folder", "store")

SPLITS: dict[str, tuple[str, ...]] = {
    "digits": ("train", "test"),
    "fashion-mnist": ("train", "test"),
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "stl10": ("train", "test", "unlabeled", "train+unlabeled"),
    "folder": FOLDER_SPLITS,
    "store": ("train", "test", "val", "valid", "validation", "unlabeled"),
}

FASHION_MNIST_CLASSES: list[str] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DIGITS_SPLIT_SEED = 0


# ----------------------------------------------------------------------------- entry point


def load_image_dataset(
    name: str,
    split: str = "train",
    root: str | None = None,
    download: bool = False,
    image_size: int | None = None,
) -> ImageDataset:
    """Load one split of a named image data set into memory, resized to `image_size` if given."""
    check_choice("data set", name, DATASETS)
    check_choice(f"split for {name}", split, SPLITS[name])
    if image_size is not None and (isinstance(image_size, bool) or image_size <= 0):
        raise UserError(f"image_size must be a positive integer, got {image_size!r}")
    if name == "digits":
        ds = _load_digits(split)
    elif name == "fashion-mnist":
        ds = _load_fashion_mnist(split, root, download)
    elif name in ("cifar10", "cifar100"):
        ds = _load_cifar(name, split, root, download)
    elif name == "stl10":
        ds = _load_stl10(split, root, download)
    elif name == "store":
        return open_store(root, split, image_size)
    else:
        return _load_folder(split, root, image_size if image_size is not None else 64)
    if image_size is not None and (
        ds.images.shape[2] != image_size or ds.images.shape[3] != image_size
    ):
        ds = ImageDataset(resize_uint8(ds.images, image_size), ds.labels, ds.classes, ds.name)
    return ds


def cache_dir(name: str) -> Path:
    """Where downloads for data set `name` go: $XDG_CACHE_HOME/contrastkit/NAME (default ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "contrastkit" / name


# ----------------------------------------------------------------------------- digits


def _load_digits(split: str) -> ImageDataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    data = np.asarray(bunch.data, dtype=np.float64)  # values 0..16
    target = np.asarray(bunch.target, dtype=np.int64)
    images = np.rint(data * (255.0 / 16.0)).clip(0, 255).astype(np.uint8).reshape(-1, 1, 8, 8)
    train_idx, test_idx = train_test_split(
        np.arange(len(target)), test_size=0.2, stratify=target, random_state=DIGITS_SPLIT_SEED
    )
    idx = np.sort(train_idx if split == "train" else test_idx)
    return ImageDataset(
        torch.from_numpy(images[idx].copy()),
        torch.from_numpy(target[idx].copy()),
        [str(i) for i in range(10)],
        "digits",
    )


# ----------------------------------------------------------------------------- IDX files

_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or plain, into a numpy array."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise UserError(
                f"{path}: broken gzip file ({exc}); delete it and fetch it again"
            ) from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise UserError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise UserError(
            f"{path}: IDX body has {len(raw) - header} bytes, expected {expected} for shape {dims}"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header, count=math.prod(dims)).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _find_idx(folder: Path, prefix: str, kind: str, ndim: int) -> Path | None:
    """The IDX file for (prefix='train'|'t10k', kind='images'|'labels') in folder, gz or plain."""
    stems = (f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte")
    for base in (folder, folder / "FashionMNIST" / "raw"):
        for stem in stems:
            for suffix in ("", ".gz"):
                candidate = base / (stem + suffix)
                if candidate.is_file():
                    return candidate
    return None


def idx_pair(folder: Path, split: str) -> tuple[Path, Path] | None:
    """The Fashion-MNIST (images, labels) IDX files of `split` in `folder`, or None."""
    prefix = "train" if split == "train" else "t10k"
    images = _find_idx(folder, prefix, "images", 3)
    labels = _find_idx(folder, prefix, "labels", 1)
    return (images, labels) if images is not None and labels is not None else None


def _load_fashion_mnist(split: str, root: str | None, download: bool) -> ImageDataset:
    folders = (
        [Path(root).expanduser()] if root else [DEBIAN_FASHION_MNIST, cache_dir("fashion-mnist")]
    )
    found = next((pair for f in folders if (pair := idx_pair(f, split)) is not None), None)
    if found is None and download:
        target = folders[0] if root else cache_dir("fashion-mnist")
        _torchvision_download("fashion-mnist", target)
        found = idx_pair(target, split)
    if found is None:
        where = " or ".join(str(f) for f in folders)
        prefix = "train" if split == "train" else "t10k"
        raise UserError(
            f"Fashion-MNIST {split} files not found in {where}: expected {prefix}-images-idx3-ubyte[.gz] "
            f"and {prefix}-labels-idx1-ubyte[.gz]; install them with "
            f"`apt-get install dataset-fashion-mnist` or download with --set data.download=true"
        )
    images = read_idx(found[0])
    labels = read_idx(found[1])
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise UserError(
            f"{found[0]} / {found[1]}: expected images (N, H, W) and labels (N,), "
            f"got {images.shape} and {labels.shape}"
        )
    return ImageDataset(
        torch.from_numpy(images.astype(np.uint8)).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        list(FASHION_MNIST_CLASSES),
        "fashion-mnist",
    )


# ----------------------------------------------------------------------------- torchvision sets


def _torchvision_download(name: str, folder: Path) -> None:
    """Download a data set through torchvision into `folder` (needs a network)."""
    import torchvision.datasets as tvd

    folder.mkdir(parents=True, exist_ok=True)
    try:
        if name == "fashion-mnist":
            for train in (True, False):
                tvd.FashionMNIST(str(folder), train=train, download=True)
        elif name == "cifar10":
            tvd.CIFAR10(str(folder), download=True)
        elif name == "cifar100":
            tvd.CIFAR100(str(folder), download=True)
        elif name == "stl10":
            tvd.STL10(str(folder), split="train", download=True)
    except Exception as exc:  # network errors come in many types
        raise UserError(f"downloading {name} into {folder} failed: {exc}") from exc


def _torchvision_dataset(name: str, split: str, root: str | None, download: bool) -> Any:
    import torchvision.datasets as tvd

    folder = Path(root).expanduser() if root else cache_dir(name)
    if download:
        _torchvision_download(name, folder)
    try:
        if name == "cifar10":
            return tvd.CIFAR10(str(folder), train=split == "train", download=False)
        if name == "cifar100":
            return tvd.CIFAR100(str(folder), train=split == "train", download=False)
        return tvd.STL10(str(folder), split=split, download=False)
    except RuntimeError as exc:
        expected = {
            "cifar10": "cifar-10-batches-py/ (the python version from https://www.cs.toronto.edu/~kriz/)",
            "cifar100": "cifar-100-python/ (the python version from https://www.cs.toronto.edu/~kriz/)",
            "stl10": "stl10_binary/ (from https://cs.stanford.edu/~acoates/stl10/)",
        }[name]
        raise UserError(
            f"{name} not found (or corrupt) in {folder}: expected {expected}; "
            f"point data.root at its parent folder or download with --set data.download=true"
        ) from exc


def _load_cifar(name: str, split: str, root: str | None, download: bool) -> ImageDataset:
    ds = _torchvision_dataset(name, split, root, download)
    images = torch.from_numpy(np.asarray(ds.data, dtype=np.uint8)).permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(ds.targets, dtype=np.int64))
    return ImageDataset(images.contiguous(), labels, list(ds.classes), name)


def _load_stl10(split: str, root: str | None, download: bool) -> ImageDataset:
    ds = _torchvision_dataset("stl10", split, root, download)
    images = torch.from_numpy(np.asarray(ds.data, dtype=np.uint8))  # already (N, 3, 96, 96)
    raw_labels = np.asarray(ds.labels, dtype=np.int64)
    if split in ("train", "test"):
        return ImageDataset(
            images.contiguous(), torch.from_numpy(raw_labels), list(ds.classes), "stl10"
        )
    return ImageDataset(images.contiguous(), None, [], "stl10")


# ----------------------------------------------------------------------------- image folder


def _load_folder(split: str, root: str | None, size: int) -> ImageDataset:
    """Class subfolders give labels (sorted names); a flat folder gives an unlabeled set."""
    folder, files, targets, classes = folder_files(split, root)
    decoded, kept, bad = _decode_all(files, size)
    if bad:
        warnings.warn(
            f"skipped {bad} unreadable or corrupt image file(s) of {len(files)} in {folder}",
            stacklevel=3,
        )
    if not decoded:
        raise UserError(
            f"image folder {folder}: none of its {len(files)} image files could be decoded"
        )
    rgb = any(img.shape[0] >= 3 for img in decoded)
    images = torch.stack([to_channels(img, rgb) for img in decoded])
    labels = torch.tensor([targets[i] for i in kept], dtype=torch.int64) if classes else None
    return ImageDataset(images, labels, classes, "folder")


def _decode_all(files: Sequence[Path], size: int) -> tuple[list[Tensor], list[int], int]:
    """Decode and resize every file; return images (C, size, size) uint8, their indices, #failures."""
    images: list[Tensor] = []
    kept: list[int] = []
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image codecs in favour of torchcodec; they still work
        warnings.simplefilter("ignore", DeprecationWarning)
        for i, path in enumerate(files):
            img = decode_file(path)
            if img is not None:
                images.append(resize_center_crop(img, size))
                kept.append(i)
    return images, kept, len(files) - len(kept)
