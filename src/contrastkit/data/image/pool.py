"""The decoding worker processes of ``contrastkit prepare``, and their results in order.

Workers are forked from a forkserver that imported the decoding modules (torch, torchvision) once
and never ran a torch op: fork-safe, unlike forking a process whose thread pools started, and a
worker starts in milliseconds where a spawned one imports torch and torchvision again (~3 s each,
every split). Where there is no forkserver they are spawned. Each worker uses one torch thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

import torch

R = TypeVar("R")

# imported once by the workers' server: this module and those whose functions the workers run
# (decode.decode_chunk for folders, shards.read_shard for tar shards)
PRELOAD = [__name__, "contrastkit.data.image.decode", "contrastkit.data.image.shards", "torchvision.io"]


def _init_worker() -> None:
    torch.set_num_threads(1)


def _worker_context() -> BaseContext:
    """The forkserver context with the decoding modules preloaded; spawn where there is none."""
    if "forkserver" not in get_all_start_methods():
        return get_context("spawn")
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start_workers(workers: int) -> None:
    """Start the decoding workers' server now (it imports in the background while the caller
    lists its files)."""
    ctx = _worker_context()
    if workers > 1 and ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def decode_pool(workers: int) -> ProcessPoolExecutor:
    """`workers` decoding processes (one torch thread each)."""
    return ProcessPoolExecutor(workers, mp_context=_worker_context(), initializer=_init_worker)


def map_in_order(
    fn: Callable[..., R], jobs: Iterable[tuple[Any, ...]], workers: int, ahead: int
) -> Generator[R, None, None]:
    """``fn(*job)`` for each job, in order: in this process when `workers` <= 1, else in a
    :func:`decode_pool` of `workers` processes with at most `ahead` jobs submitted and not yet
    taken (what is decoded but not written stays bounded)."""
    if workers <= 1:
        for job in jobs:
            yield fn(*job)
        return
    with decode_pool(workers) as pool:
        pending: deque[Future[R]] = deque()
        todo = iter(jobs)
        for job in todo:
            pending.append(pool.submit(fn, *job))
            if len(pending) >= ahead:
                break
        while pending:
            fut = pending.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(fn, *nxt))
            yield fut.result()
