"""MovieLens from GroupLens: where a named data set lives on disk, and its download.

Harper & Konstan 2015, "The MovieLens Datasets: History and Context", ACM TiiS 5(4).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from contrastkit.errors import UserError

GROUPLENS = "https://files.grouplens.org/datasets/movielens"
# name -> (zip file on GroupLens, folder inside the zip, file whose presence marks the data set)
MOVIELENS: dict[str, tuple[str, str, str]] = {
    "ml-100k": ("ml-100k.zip", "ml-100k", "u.data"),
    "ml-1m": ("ml-1m.zip", "ml-1m", "ratings.dat"),
    "ml-10m": ("ml-10m.zip", "ml-10M100K", "ratings.dat"),
    "ml-20m": ("ml-20m.zip", "ml-20m", "ratings.csv"),
}


def default_cache() -> Path:
    """$CONTRASTKIT_DATA, else ~/.cache/contrastkit/datasets."""
    env = os.environ.get("CONTRASTKIT_DATA")
    return Path(env) if env else Path.home() / ".cache" / "contrastkit" / "datasets"


def _has(folder: Path, marker: str) -> bool:
    return (folder / marker).is_file()


def locate_movielens(name: str, root: str | Path | None = None, *, download: bool = False) -> Path:
    """The folder holding MovieLens `name`: `root` (or root/name), else the cache, else download."""
    if name not in MOVIELENS:
        raise UserError(f"unknown MovieLens data set {name!r}; known: {', '.join(MOVIELENS)}")
    _zip, inner, marker = MOVIELENS[name]
    candidates: list[Path] = []
    if root is not None:
        r = Path(root)
        candidates += [r, r / name, r / inner]
    cache = default_cache()
    candidates += [cache / name, cache / inner]
    for folder in candidates:
        if _has(folder, marker):
            return folder
    if not download:
        where = ", ".join(str(c) for c in candidates)
        raise UserError(
            f"{name} not found (looked for {marker} in {where}); point recsys.root at the folder "
            "holding it or set recsys.download=true to fetch it from GroupLens"
        )
    target = Path(root) if root is not None else cache
    return download_movielens(name, target)


def download_movielens(name: str, target: str | Path) -> Path:
    """Download and unpack MovieLens `name` from GroupLens into target/name; returns that folder."""
    zip_name, inner, marker = MOVIELENS[name]
    target = Path(target)
    final = target / name
    if _has(final, marker):
        return final
    target.mkdir(parents=True, exist_ok=True)
    url = f"{GROUPLENS}/{zip_name}"
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        archive = Path(tmp) / zip_name
        try:
            with urllib.request.urlopen(url, timeout=60) as response, archive.open("wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as exc:
            raise UserError(f"could not download {url}: {exc}") from None
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        unpacked = Path(tmp) / inner
        if not _has(unpacked, marker):
            raise UserError(f"the archive {url} does not hold {inner}/{marker}")
        if final.exists():
            shutil.rmtree(final)
        unpacked.rename(final)
    return final
