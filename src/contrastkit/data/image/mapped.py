"""Read-only store mappings: give back the pages a sequential pass has read.

Pages of a memory-mapped file that a process has touched count in its resident memory (RSS)
until the kernel reclaims them. A pass over a whole store (normalisation statistics, the
evaluation's feature extraction) would therefore show the store's size as resident, although
those pages are page cache that the kernel may drop at any time. :func:`release` tells the kernel
(``madvise(MADV_DONTNEED)``) that the process is done with the pages under a block it has read:
for a read-only shared file mapping they leave the process's RSS and stay in the page cache; the
data is never lost (a later read maps them again). Only mappings registered by
:func:`register` (those of ``open_store``) are touched; any other tensor is left alone.

Training reads rows at random: :func:`read_rows` reads them from the mapping's file with
``pread`` instead of through the map (see there why), so the store never counts in its RSS.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import weakref
from typing import Any

import numpy as np
import torch
from torch import Tensor

# a fault maps the whole page-cache folio it hits, and folios go up to 2 MiB (PMD size): what is
# given back after a block is widened to that alignment on both sides
_FOLIO = max(mmap.PAGESIZE, 2 << 20)
# start address -> (end address, weak reference to the mmap object)
_MAPPINGS: dict[int, tuple[int, weakref.ref[Any]]] = {}
# start address -> (file, offset of the mapping's first byte in it)
_FILES: dict[int, tuple[str, int]] = {}


def register(array: Any) -> None:
    """Remember a read-only ``np.memmap`` (its mmap object, weakly) so its pages can be released."""
    mm = getattr(array, "_mmap", None)
    if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = int(array.ctypes.data)
    _MAPPINGS[start] = (start + int(array.nbytes), weakref.ref(mm))
    _FILES[start] = (str(array.filename), int(array.offset))


def _mapping(ptr: int) -> tuple[int, int, Any] | None:
    """(start, end, mmap object) of the registered mapping holding address `ptr`, if any."""
    for start, (end, ref) in list(_MAPPINGS.items()):
        mm = ref()
        if mm is None:
            del _MAPPINGS[start]
            _FILES.pop(start, None)
            continue
        if start <= ptr < end:
            return start, end, mm
    return None


def _dontneed(mm: Any, offset: int, stop: int) -> None:
    with contextlib.suppress(ValueError, OSError):  # closed mapping, or no madvise
        mm.madvise(mmap.MADV_DONTNEED, offset, stop - offset)


def release(block: Tensor) -> None:
    """Drop the pages under a contiguous block of a registered mapping from this process's
    resident memory (no-op for any other tensor)."""
    if not _MAPPINGS or not block.is_contiguous() or block.numel() == 0:
        return
    ptr = block.data_ptr()
    found = _mapping(ptr)
    if found is not None:
        start, end, mm = found
        # the mapping's own offset, widened to whole folios around the block
        offset = (ptr - start) // _FOLIO * _FOLIO
        stop = -(-(ptr - start + block.numel() * block.element_size()) // _FOLIO) * _FOLIO
        _dontneed(mm, offset, min(end - start, stop))


def read_rows(images: Tensor, rows: Tensor) -> Tensor | None:
    """Rows `rows` (int64; sorted, they are read in file order) of a registered mapped tensor
    `images` (N, ...), read from its file with ``pread`` into a new tensor, never through the map;
    None for any other tensor (or where there is no ``pread``).

    Random rows read through a map cost far more resident memory than their bytes: each fault
    maps the neighbours already in the page cache too (fault-around windows, whole large folios:
    ~1 MiB per 3 KiB row was seen on Linux 6.18). Read with ``pread`` they stay page cache, which
    the kernel owns and reclaims, and the process holds only the batch."""
    if not _MAPPINGS or not images.is_contiguous() or not hasattr(os, "pread"):  # no pread: Windows
        return None
    ptr = images.data_ptr()
    found = _mapping(ptr)
    if found is None:
        return None
    start, _, _ = found
    path, offset = _FILES[start]
    out = torch.empty((rows.numel(), *images.shape[1:]), dtype=images.dtype)
    row_bytes = images[0].numel() * images.element_size()
    base = offset + (ptr - start)
    view = out.view(torch.uint8).numpy().reshape(rows.numel(), row_bytes)
    vectored = hasattr(os, "preadv")  # straight into the batch
    fd = os.open(path, os.O_RDONLY)
    try:
        for i, r in enumerate(rows.tolist()):
            if vectored:
                got = os.preadv(fd, [view[i]], base + r * row_bytes)
            else:
                data = os.pread(fd, row_bytes, base + r * row_bytes)
                got = len(data)
                view[i, :got] = np.frombuffer(data, dtype=np.uint8)
            if got != row_bytes:
                raise OSError(f"{path}: short read of row {r} ({got} of {row_bytes} bytes)")
    finally:
        os.close(fd)
    return out


def take(images: Tensor, rows: Tensor) -> Tensor:
    """A copy of rows `rows` of `images`: read with pread from a registered mapping (see
    :func:`read_rows`), ``index_select`` from any other tensor."""
    read = read_rows(images, rows)
    return read if read is not None else images.index_select(0, rows)
