"""Negatives across processes: an all-gather that carries gradients back to the rank that
owns each row, so every rank contrasts its local rows against the keys of the global batch
(O(local x global) memory). Outside torch.distributed every function is the identity.

Gradient bookkeeping: the backward of the autograd-aware all-gather sums, over ranks, the
gradients flowing into each rank's rows; DistributedDataParallel then averages over ranks. Both
together give exactly the gradient of the mean loss over the global batch (tested against one
process on the concatenated batch).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> tuple[int, int]:
    """(rank, world_size) of this process; (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward sums every rank's gradient w.r.t. the gathered rows
    (all_reduce) and keeps this rank's slice, i.e. a reduce-scatter (gloo has none)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        rank, size = world()
        ctx.rank, ctx.rows = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: Tensor) -> Tensor:
    """Rows of ``x`` from every rank, in rank order, differentiable w.r.t. the local rows
    (every rank must pass the same number of rows).

    Example (this process's queries against the keys of every process; key ``rank_offset(n) + i``
    is the positive of query i)::

        keys = gather_with_grad(k)  # (world_size * n, D)
        index = torch.arange(n) + rank_offset(n)
        loss = info_nce(q, keys, positive_index=index)  # = info_nce(q, k, gather_distributed=True)
    """
    _, size = world()
    if size == 1:
        return x
    out: Tensor = _GatherWithGrad.apply(x)
    return out


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """Rows of ``x`` from every rank, in rank order (no gradient: keys, labels)."""
    _, size = world()
    if size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def rank_offset(local_rows: int) -> int:
    """Index of this rank's first row in the gathered (global) batch."""
    rank, _ = world()
    return rank * local_rows
