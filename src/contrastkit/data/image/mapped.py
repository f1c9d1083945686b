"""Read-only store mappings: give back the pages a sequential pass has read.

Pages of a memory-mapped file that a process has touched count in its resident memory (RSS)
until the kernel reclaims them. A pass over a whole store (normalisation statistics, the
evaluation's feature extraction) would therefore show the store's size as resident, although
those pages are page cache that the kernel may drop at any time. :func:`release` tells the kernel
(``madvise(MADV_DONTNEED)``) that the process is done with the pages under a block it has read:
for a read-only shared file mapping they leave the process's RSS and stay in the page cache; the
data is never lost (a later read maps them again). Only mappings registered by
:func:`register` (those of ``open_store``) are touched; any other tensor is left alone.
"""

from __future__ import annotations

import contextlib
import mmap
import weakref
from typing import Any

from torch import Tensor

_PAGE = mmap.PAGESIZE
# start address -> (end address, weak reference to the mmap object)
_MAPPINGS: dict[int, tuple[int, weakref.ref[Any]]] = {}


def register(array: Any) -> None:
    """Remember a read-only ``np.memmap`` (its mmap object, weakly) so its pages can be released."""
    mm = getattr(array, "_mmap", None)
    if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = int(array.ctypes.data)
    _MAPPINGS[start] = (start + int(array.nbytes), weakref.ref(mm))


def release(block: Tensor) -> None:
    """Drop the pages under a contiguous block of a registered mapping from this process's
    resident memory (no-op for any other tensor)."""
    if not _MAPPINGS or not block.is_contiguous() or block.numel() == 0:
        return
    ptr = block.data_ptr()
    for start, (end, ref) in list(_MAPPINGS.items()):
        mm = ref()
        if mm is None:
            del _MAPPINGS[start]
            continue
        if start <= ptr < end:
            # the mapping's own offset: the block's first page .. its last byte
            offset = (ptr - start) // _PAGE * _PAGE
            stop = min(end, ptr + block.numel() * block.element_size()) - start
            with contextlib.suppress(ValueError, OSError):  # closed mapping, or no madvise
                mm.madvise(mmap.MADV_DONTNEED, offset, stop - offset)
            return
