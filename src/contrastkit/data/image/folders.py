"""Image folders: which files are images, which subfolders are splits and which are classes.

A folder is flat (an unlabeled set), or holds one subfolder per class (labels by sorted name,
images anywhere below); either may sit in split subfolders (``training/`` ``test/`` …). Hidden
entries (a leading dot) are ignored; image files are those with a suffix of
:data:`contrastkit.data.image.decode.IMAGE_SUFFIXES`, sorted by path.
"""

from __future__ import annotations

from pathlib import Path

from contrastkit.data.image.decode import IMAGE_SUFFIXES
from contrastkit.errors import UserError, closest

# the splits of ``data.name: folder``; "all" reads the whole folder, split subfolders included
FOLDER_SPLITS: tuple[str, ...] = ("train", "test", "val", "valid", "validation", "unlabeled", "all")
SPLIT_FOLDERS: frozenset[str] = frozenset(FOLDER_SPLITS) - {"all"}


def subfolders(folder: Path) -> list[Path]:
    """The folder's subfolders that are not hidden, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(folder: Path, *, recursive: bool) -> list[Path]:
    """The image files in `folder` (and below it when `recursive`), sorted."""
    pattern = "**/*" if recursive else "*"
    return sorted(
        p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def split_folder(folder: Path, split: str) -> Path:
    """Use FOLDER/SPLIT when the folder is laid out as split subfolders (train/, test/, ...)."""
    names = {p.name for p in subfolders(folder)}
    if not names or not names <= SPLIT_FOLDERS or split == "all":
        return folder
    if split in names:
        return folder / split
    raise UserError(
        f"image folder {folder} has split subfolders {sorted(names)} but no {split!r}"
        f"{closest(split, names)}"
    )


def folder_files(split: str, root: str | None) -> tuple[Path, list[Path], list[int], list[str]]:
    """The folder of `split`, its image files (sorted), their labels and the class names."""
    if not root:
        raise UserError(
            "data set 'folder' needs data.root: a folder of images, either flat or one subfolder per class"
        )
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise UserError(
            f"image folder {folder} does not exist: expected a folder of images "
            f"({', '.join(IMAGE_SUFFIXES)}), flat or one subfolder per class"
        )
    folder = split_folder(folder, split)
    subdirs = subfolders(folder)
    files: list[Path] = []
    targets: list[int] = []
    if subdirs:
        classes = [d.name for d in subdirs]
        for label, d in enumerate(subdirs):
            members = image_files(d, recursive=True)
            files.extend(members)
            targets.extend([label] * len(members))
    else:
        classes = []
        files = image_files(folder, recursive=False)
    if not files:
        raise UserError(
            f"image folder {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)}); "
            f"expected images directly inside it or one subfolder per class"
        )
    return folder, files, targets, classes
