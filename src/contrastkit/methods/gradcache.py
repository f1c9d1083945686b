"""GradCache: contrastive losses over batches larger than memory (Gao et al. 2021, arXiv:2101.06983).

Two passes. (1) Encode the batch chunk by chunk without a graph, compute the loss on the cached
representations and its gradient with respect to each representation. (2) On backward, encode
each chunk again with a graph and back-propagate that chunk's cached gradient into the encoder.
The gradients equal those of the uncached loss (up to float rounding) while activation memory
is one chunk's. The random state is recorded per chunk and replayed, so dropout (SimCSE's
noise) draws the same masks in both passes; BatchNorm buffers are not updated twice. BatchNorm
*statistics* in training mode are per chunk, so towers with BatchNorm are not exactly equal to
the full-batch forward (the transformer text towers, with LayerNorm, are).

The second pass runs inside the backward of the returned loss, so the loss plugs into any
training loop (autocast and gradient scaling included).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from contrastkit.errors import UserError


@dataclass
class Tower:
    """One encoder's share of a cached step: ``fn(*chunk) -> (rows, D)`` for each chunk of its
    inputs, and (optionally) its module, whose buffers the second pass must leave unchanged."""

    fn: Callable[..., Tensor]
    chunks: Sequence[tuple[Tensor, ...]]
    module: nn.Module | None = None
    _states: list[Any] = field(default_factory=list, repr=False)


def split_rows(chunk_size: int, *tensors: Tensor) -> list[tuple[Tensor, ...]]:
    """Split tensors with the same first dimension into chunks of ``chunk_size`` rows."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise UserError(f"GradCache chunk size must be a positive integer, got {chunk_size!r}")
    if not tensors:
        return []
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise UserError(f"GradCache inputs must have the same number of rows; got {[t.shape[0] for t in tensors]}")
    return [tuple(t[i : i + chunk_size] for t in tensors) for i in range(0, n, chunk_size)]


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _first_tensor(chunk: tuple[Tensor, ...]) -> Tensor:
    for t in chunk:
        if isinstance(t, Tensor):
            return t
    raise UserError("each GradCache chunk needs at least one tensor input")


class _GradCacheFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        towers: Sequence[Tower],
        loss_fn: Callable[[list[Tensor]], Tensor],
        out: dict[str, Any],
        *params: Tensor,
    ) -> Tensor:
        device = _first_tensor(towers[0].chunks[0]).device
        ctx.autocast = (
            torch.is_autocast_enabled(device.type),
            torch.get_autocast_dtype(device.type),
        )
        reps: list[Tensor] = []
        for tower in towers:
            tower._states = []
            pieces = []
            for chunk in tower.chunks:
                tower._states.append(_rng_state(device))
                pieces.append(tower.fn(*chunk).detach())
            reps.append(torch.cat(pieces))
        with torch.enable_grad():
            leaves = [r.requires_grad_(True) for r in reps]
            wanted = [p for p in params if p.requires_grad]
            loss = loss_fn(leaves)
            grads = torch.autograd.grad(loss, [*leaves, *wanted], allow_unused=True)
        ctx.towers = towers
        ctx.device = device
        ctx.rep_grads = [g if g is not None else torch.zeros_like(r) for g, r in zip(grads, reps, strict=False)]
        loss_param_grads = iter(grads[len(leaves) :])
        ctx.loss_param_grads = [next(loss_param_grads) if p.requires_grad else None for p in params]
        ctx.save_for_backward(*params)
        out["representations"] = [r.detach() for r in reps]
        return loss.detach()

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        params = ctx.saved_tensors
        wanted_idx = [i for i, p in enumerate(params) if p.requires_grad]
        wanted = [params[i] for i in wanted_idx]
        totals: list[Tensor | None] = [
            None if g is None else g * grad_output for g in ctx.loss_param_grads
        ]
        enabled, dtype = ctx.autocast
        device: torch.device = ctx.device
        devices = [device] if device.type == "cuda" else []
        for tower, rep_grad in zip(ctx.towers, ctx.rep_grads, strict=True):
            offset = 0
            for chunk, (cpu_state, cuda_state) in zip(tower.chunks, tower._states, strict=True):
                saved = (
                    {k: b.detach().clone() for k, b in tower.module.named_buffers()}
                    if tower.module is not None
                    else {}
                )
                with torch.random.fork_rng(devices=devices), torch.enable_grad():
                    torch.set_rng_state(cpu_state)
                    if cuda_state is not None:
                        torch.cuda.set_rng_state(cuda_state, device)
                    with torch.autocast(device.type, dtype=dtype, enabled=enabled):
                        rep = tower.fn(*chunk)
                rows = rep.shape[0]
                g = (rep_grad[offset : offset + rows] * grad_output).to(rep.dtype)
                offset += rows
                chunk_grads = torch.autograd.grad(rep, wanted, grad_outputs=g, allow_unused=True)
                if saved and tower.module is not None:  # after the graph is used: it may hold buffers
                    with torch.no_grad():
                        for k, b in tower.module.named_buffers():
                            if not torch.equal(b, saved[k]):
                                b.copy_(saved[k])
                for i, cg in zip(wanted_idx, chunk_grads, strict=True):
                    if cg is not None:
                        prev = totals[i]
                        totals[i] = cg if prev is None else prev + cg
            tower._states = []
        return (None, None, None, *totals)


def gradcache_loss(
    towers: Sequence[Tower],
    loss_fn: Callable[[list[Tensor]], Tensor],
    params: Sequence[Tensor],
) -> tuple[Tensor, list[Tensor]]:
    """The loss of ``loss_fn([tower representations])`` with GradCache's two-pass gradients.

    ``params``: every trainable tensor the towers and the loss use (e.g. ``model.parameters()``,
    a learnable temperature included). Returns the loss (backward runs the second pass) and the
    detached representations of each tower (for logging).
    """
    if not towers or any(not t.chunks for t in towers):
        raise UserError("GradCache needs at least one tower with at least one chunk")
    out: dict[str, Any] = {}
    loss = _GradCacheFunction.apply(towers, loss_fn, out, *params)
    return loss, out["representations"]
