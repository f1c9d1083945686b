"""Image data sets as one uint8 (N, C, H, W) tensor: in memory, or memory-mapped from a store.

Sources: scikit-learn digits (embedded), Fashion-MNIST IDX files (Debian `dataset-fashion-mnist`
or torchvision download), CIFAR-10/100 and STL-10 through torchvision, an image folder, and a
store written by `contrastkit prepare` (see contrastkit.data.image.store).
"""

from __future__ import annotations

import gzip
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.data.image.mapped import release, take
from contrastkit.errors import UserError, check_choice, closest

DATASETS: tuple[str, ...] = ("digits", "fashion-mnist", "cifar10", "cifar100", "stl10", "folder", "store")

SPLITS: dict[str, tuple[str, ...]] = {
    "digits": ("train", "test"),
    "fashion-mnist": ("train", "test"),
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "stl10": ("train", "test", "unlabeled", "train+unlabeled"),
    "folder": ("train", "test", "val", "valid", "validation", "unlabeled", "all"),
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
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".gif", ".webp")
DIGITS_SPLIT_SEED = 0
_CHUNK = 4096
_STATS_BYTES = 32 << 20  # uint8 bytes per block of the statistics pass


def channel_histogram(block: Tensor) -> Tensor:
    """(C, 256) int64: how often each uint8 value occurs per channel in `block` (N, C, H, W)."""
    return torch.stack([torch.bincount(block[:, c].reshape(-1), minlength=256) for c in range(block.shape[1])])


def stats_from_histogram(hist: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation in [0, 1] of the pixels counted in `hist` (C, 256):
    exact sums over the counts (no float pass over the pixels), std at least 1e-6."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    counts = hist.to(torch.float64)
    total = counts.sum(dim=1).clamp_min(1.0)
    mean = (counts * values).sum(dim=1) / total
    var = ((counts * values.square()).sum(dim=1) / total - mean.square()).clamp_min(0.0)
    return tuple(mean.tolist()), tuple(var.sqrt().clamp_min(1e-6).tolist())


@dataclass
class ImageDataset:
    """An image data set: uint8 images (N, C, H, W) and optional int64 labels (N,).

    ``mapped``: the images are a read-only memory map of a store (not resident): read them in
    blocks or by index, never copy or move the whole tensor. ``rows`` (mapped only, from
    :meth:`select`): the data set is these rows of the map (labels already selected), no copy.
    """

    images: Tensor
    labels: Tensor | None
    classes: list[str]
    name: str
    mapped: bool = field(default=False, compare=False)
    rows: Tensor | None = field(default=None, compare=False)
    _stats: tuple[tuple[float, ...], tuple[float, ...]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be a uint8 (N, C, H, W) tensor, got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if not self.mapped:
            self.images = self.images.contiguous()
        if self.rows is not None:
            if not self.mapped:
                raise ValueError("rows select rows of a memory-mapped store only")
            self.rows = self.rows.to(torch.int64).contiguous()
        if self.labels is not None:
            self.labels = self.labels.to(torch.int64).contiguous()
            if self.labels.shape != (len(self),):
                raise ValueError(f"labels must have shape ({len(self)},), got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.rows.numel()) if self.rows is not None else int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of class names (0 when unlabeled)."""
        return len(self.classes)

    @property
    def channels(self) -> int:
        """Channels per image (1 grayscale, 3 RGB)."""
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        """Image height in pixels."""
        return int(self.images.shape[2])

    def _compute_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self._stats is None:
            hist = torch.zeros(self.channels, 256, dtype=torch.int64)
            rows = max(1, min(_CHUNK, _STATS_BYTES // max(1, self.images[0].numel())))
            for start in range(0, len(self), rows):
                if self.rows is not None:  # selected rows of a map: read, not mapped
                    hist += channel_histogram(take(self.images, self.rows[start : start + rows]))
                    continue
                block = self.images[start : start + rows]
                hist += channel_histogram(block)
                release(block)
            self._stats = stats_from_histogram(hist)
        return self._stats

    def set_stats(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Use these per-channel statistics (e.g. a store's, computed when it was prepared)."""
        if len(mean) != self.channels or len(std) != self.channels:
            raise ValueError(f"{self.channels} channels, got mean {list(mean)} and std {list(std)}")
        self._stats = (tuple(float(v) for v in mean), tuple(float(v) for v in std))

    def mean(self) -> tuple[float, ...]:
        """Per-channel pixel mean in [0, 1] (computed once, then cached)."""
        return self._compute_stats()[0]

    def std(self) -> tuple[float, ...]:
        """Per-channel pixel standard deviation in [0, 1] (computed once, then cached)."""
        return self._compute_stats()[1]

    def _pick(self, idx: Tensor) -> tuple[Tensor | None, Tensor]:
        """The labels at `idx` (int indices or a boolean mask) and the rows of the images they are."""
        idx = torch.as_tensor(idx)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        idx = idx.to(torch.int64)
        labels = self.labels.index_select(0, idx) if self.labels is not None else None
        return labels, self.rows.index_select(0, idx) if self.rows is not None else idx

    def subset(self, idx: Tensor) -> ImageDataset:
        """The images (and labels) at `idx` (int indices or a boolean mask) as a new data set."""
        labels, rows = self._pick(idx)
        return ImageDataset(take(self.images, rows), labels, list(self.classes), self.name)

    def select(self, idx: Tensor) -> ImageDataset:
        """Like :meth:`subset`, but a memory-mapped data set stays mapped: the result holds the
        row numbers, not a copy of the images (training and statistics read them by index)."""
        if not self.mapped:
            return self.subset(idx)
        labels, rows = self._pick(idx)
        return ImageDataset(self.images, labels, list(self.classes), self.name, mapped=True, rows=rows)


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
        from contrastkit.data.image.store import open_store

        return open_store(root, split, image_size)
    else:
        return _load_folder(split, root, image_size if image_size is not None else 64)
    if image_size is not None and (
        ds.images.shape[2] != image_size or ds.images.shape[3] != image_size
    ):
        ds = ImageDataset(resize_uint8(ds.images, image_size), ds.labels, ds.classes, ds.name)
    return ds


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """Resize uint8 (N, C, H, W) images to (size, size), bilinear with antialias, in chunks."""
    out = torch.empty(
        (images.shape[0], images.shape[1], size, size), dtype=torch.uint8, device=images.device
    )
    for start in range(0, images.shape[0], _CHUNK):
        chunk = images[start : start + _CHUNK].float()
        resized = F.interpolate(
            chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out[start : start + _CHUNK] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


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


def _idx_pair(folder: Path, split: str) -> tuple[Path, Path] | None:
    prefix = "train" if split == "train" else "t10k"
    images = _find_idx(folder, prefix, "images", 3)
    labels = _find_idx(folder, prefix, "labels", 1)
    return (images, labels) if images is not None and labels is not None else None


def _load_fashion_mnist(split: str, root: str | None, download: bool) -> ImageDataset:
    folders = (
        [Path(root).expanduser()] if root else [DEBIAN_FASHION_MNIST, cache_dir("fashion-mnist")]
    )
    found = next((pair for f in folders if (pair := _idx_pair(f, split)) is not None), None)
    if found is None and download:
        target = folders[0] if root else cache_dir("fashion-mnist")
        _torchvision_download("fashion-mnist", target)
        found = _idx_pair(target, split)
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
    folder, files, targets, classes = _folder_files(split, root)
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
    images = torch.stack([_to_channels(img, rgb) for img in decoded])
    labels = torch.tensor([targets[i] for i in kept], dtype=torch.int64) if classes else None
    return ImageDataset(images, labels, classes, "folder")


def _folder_files(split: str, root: str | None) -> tuple[Path, list[Path], list[int], list[str]]:
    """The folder of `split`, its image files (sorted), their labels and the class names."""
    if not root:
        raise UserError(
            "data set 'folder' needs data.root: a folder of images, either flat or one subfolder per class"
        )
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise UserError(
            f"image folder {folder} does not exist: expected a folder of images "
            f"({', '.join(IMAGE_EXTENSIONS)}), flat or one subfolder per class"
        )
    folder = _split_folder(folder, split)
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[Path] = []
    targets: list[int] = []
    if subdirs:
        classes = [d.name for d in subdirs]
        for label, d in enumerate(subdirs):
            members = _image_files(d, recursive=True)
            files.extend(members)
            targets.extend([label] * len(members))
    else:
        classes = []
        files = _image_files(folder, recursive=False)
    if not files:
        raise UserError(
            f"image folder {folder} holds no image files ({', '.join(IMAGE_EXTENSIONS)}); "
            f"expected images directly inside it or one subfolder per class"
        )
    return folder, files, targets, classes


def _split_folder(folder: Path, split: str) -> Path:
    """Use FOLDER/SPLIT when the folder is laid out as split subfolders (train/, test/, ...)."""
    names = {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
    split_names = set(SPLITS["folder"]) - {"all"}
    if not names or not names <= split_names or split == "all":
        return folder
    if split in names:
        return folder / split
    raise UserError(
        f"image folder {folder} has split subfolders {sorted(names)} but no {split!r}"
        f"{closest(split, names)}"
    )


def _image_files(folder: Path, *, recursive: bool) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(
        p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _decode_all(files: Sequence[Path], size: int) -> tuple[list[Tensor], list[int], int]:
    """Decode and resize every file; return images (C, size, size) uint8, their indices, #failures."""
    images: list[Tensor] = []
    kept: list[int] = []
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image codecs in favour of torchcodec; they still work
        warnings.simplefilter("ignore", DeprecationWarning)
        for i, path in enumerate(files):
            img = _decode_one(path)
            if img is not None:
                images.append(_resize_center_crop(img, size))
                kept.append(i)
    return images, kept, len(files) - len(kept)


def _decode_one(path: Path) -> Tensor | None:
    """One image file as uint8 (C, H, W) with C in 1..4, or None when it cannot be decoded."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        img = decode_image(
            read_file(str(path)), mode=ImageReadMode.UNCHANGED, apply_exif_orientation=True
        )
    except (RuntimeError, ValueError, OSError):
        return None
    if img.dim() == 4:  # animated GIF: keep the first frame
        img = img[0]
    if img.dim() != 3 or img.shape[0] not in (1, 2, 3, 4) or min(img.shape[1:]) < 1:
        return None
    return img


def _resize_center_crop(img: Tensor, size: int) -> Tensor:
    """Resize the short side to `size` (antialiased bilinear), then centre-crop to size × size."""
    _, h, w = img.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        resized = F.interpolate(
            img.unsqueeze(0).float(),
            size=(nh, nw),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        img = resized.squeeze(0).round_().clamp_(0, 255).to(torch.uint8)
    top, left = (nh - size) // 2, (nw - size) // 2
    return img[:, top : top + size, left : left + size]


def _to_channels(img: Tensor, rgb: bool) -> Tensor:
    """Drop alpha; gray→RGB by repeating when `rgb`, else keep one channel."""
    c = img.shape[0]
    color = img[:3] if c >= 3 else img[:1]
    if rgb:
        return color.expand(3, -1, -1) if color.shape[0] == 1 else color
    return color
