"""Image stores: data sets decoded once into memory-mapped uint8 files (``contrastkit prepare``).

``prepare_store(SOURCE, STORE, size=S, workers=N)`` reads an image folder (flat, one subfolder per
class, with or without ``training/`` ``test/`` … split subfolders, as ``data.name: folder`` reads it),
WebDataset-style tar shards (see contrastkit.data.image.shards) or a named data set (``digits``,
``fashion-mnist``, ``cifar10``, … as ``NAME`` for all its splits or ``NAME:SPLIT``) and writes,
per split:

- ``SPLIT.images.u8``: the images as one raw C-ordered uint8 array (N, C, S, S), no header
  (open with ``np.memmap(path, np.uint8, "r", shape=(N, C, S, S))``);
- ``SPLIT.labels.npy``: int64 labels (N,), -1 everywhere for an unlabeled split;

and, written last and atomically, ``manifest.json``: format and version, the source, the
channels, the size, the class names, the resize rule, per split the image count, the number
of corrupt files skipped and the per-channel pixel mean and std (the normalisation statistics:
training need not pass over the store for them), and per file its size in bytes and sha256.

Resizing (folders): each image is decoded (torchvision, EXIF orientation applied, first frame of
an animation), its shorter side resized to S (bilinear, antialiased, rounded to uint8), then
centre-cropped to S × S; alpha is dropped, and grayscale images are repeated to RGB when any
image of the folder is colour. Exactly what ``data.name: folder`` does, so a store and the folder
give the same pixels. Named data sets are square: they are resized to S × S the same way (the
default S is their own size, i.e. no resize). Folders default to S = 64.

Decoding runs in worker processes, chunk by chunk, and chunks are written in order. After each
chunk, ``.progress.json`` records how many files are done; an interrupted prepare run again on
the same STORE with the same arguments continues from there (tar shards: shard by shard). The
manifest is written at the end (for shards it also lists every shard: name, bytes, sha256, samples,
skipped); until then the store cannot be opened.

``open_store(STORE, split)`` checks the manifest against the files (present, sizes, sha256 — the
hash is checked once and remembered in ``.verified.json`` while the files' sizes and mtimes stay
the same; ``prepare`` writes it, having just hashed the files) and returns an
:class:`ImageDataset` whose images are a read-only memory map: batches read only their rows, so
resident memory stays bounded however large the store.

This module is the store's API; the work is done by: ``sources`` (what a SOURCE holds, decoded
piece by piece), ``pool`` (the decoding worker processes), ``write`` (the one writer, its resume
protocol, finishing), ``storefmt`` (file names, manifest, verification) and ``read`` (open_store).
"""

from __future__ import annotations

from contrastkit.data.image.read import open_store
from contrastkit.data.image.storefmt import read_manifest
from contrastkit.data.image.write import StoreInterrupted, prepare_store, write_store

__all__ = ["StoreInterrupted", "open_store", "prepare_store", "read_manifest", "write_store"]
