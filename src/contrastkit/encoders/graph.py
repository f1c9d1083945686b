"""LightGCN propagation over a sparse, symmetrically normalised user–item adjacency.

LightGCN: He et al. 2020, arXiv:2002.02126. A per-layer hook lets SimGCL / XSimGCL add noise
to every layer's output (Yu et al. 2022, arXiv:2112.08679; Yu et al. 2023, arXiv:2209.02544).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

LayerHook = Callable[[int, Tensor], Tensor]


def normalized_adjacency(
    n_users: int,
    n_items: int,
    users: Tensor,
    items: Tensor,
    *,
    device: torch.device | str = "cpu",
) -> Tensor:
    """D^-1/2 A D^-1/2 of the bipartite graph, as a (U+I, U+I) sparse CSR tensor.

    Nodes 0..U-1 are users, U..U+I-1 items; one undirected edge per (user, item) pair given
    (pairs must be unique). Isolated nodes get an all-zero row.
    """
    n = n_users + n_items
    users = users.long() if users.device.type == "cpu" else users.long().cpu()  # a host-side build
    items = (items.long() if items.device.type == "cpu" else items.long().cpu()) + n_users
    rows = torch.cat([users, items])
    cols = torch.cat([items, users])
    deg = torch.bincount(rows, minlength=n).double()
    inv_sqrt = torch.where(deg > 0, deg.clamp_min(1).rsqrt(), torch.zeros_like(deg))
    values = (inv_sqrt[rows] * inv_sqrt[cols]).float()
    coo = torch.sparse_coo_tensor(
        torch.stack([rows, cols]), values, (n, n), check_invariants=False
    ).coalesce()
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return coo.to_sparse_csr().to(device)


class _SymmetricSpMM(torch.autograd.Function):
    """y = A x for a symmetric sparse A; the backward pass is A g (A^T = A).

    Much faster on CPU than autograd through torch.sparse.mm, which also prepares a gradient
    for the sparse operand."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, adj: Tensor, x: Tensor) -> Tensor:
        ctx.adj = adj  # type: ignore[attr-defined]
        return adj @ x

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[None, Tensor]:
        adj: Tensor = ctx.adj  # type: ignore[attr-defined]
        return None, adj @ grad


def propagate(
    adj: Tensor | Sequence[Tensor], ego: Tensor, layers: int, hook: LayerHook | None = None
) -> list[Tensor]:
    """[E0, E1, ..., EL] with E(l+1) = hook(l+1, A_l El); each adjacency must be symmetric.

    `adj` is one matrix for every layer or one per layer (SGL's random-walk views)."""
    adjs = [adj] * layers if isinstance(adj, Tensor) else list(adj)
    if len(adjs) != layers:
        raise ValueError(f"propagate: {len(adjs)} adjacency matrices for {layers} layers")
    out = [ego]
    x = ego
    for layer in range(1, layers + 1):
        x = _SymmetricSpMM.apply(adjs[layer - 1], x)
        if hook is not None:
            x = hook(layer, x)
        out.append(x)
    return out


class LightGCNEncoder(nn.Module):
    """User and item embedding tables, smoothed by `layers` LightGCN propagations.

    The output embedding is the mean of layers 0..L (LightGCN, He et al. 2020) or of 1..L with
    `include_ego=False` (as SimGCL and XSimGCL do). With 0 layers it is plain matrix
    factorisation.
    """

    def __init__(self, n_users: int, n_items: int, dim: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.n_users = n_users
        self.n_items = n_items
        self.layers = layers
        self.out_dim = dim
        self.user = nn.Parameter(torch.empty(n_users, dim))
        self.item = nn.Parameter(torch.empty(n_items, dim))
        nn.init.xavier_uniform_(self.user)  # as SELFRec
        nn.init.xavier_uniform_(self.item)

    def ego(self) -> Tensor:
        """Layer-0 embeddings of all nodes (users first), (U+I, D)."""
        return torch.cat([self.user, self.item], dim=0)

    def layer_outputs(
        self, adj: Tensor | Sequence[Tensor] | None, hook: LayerHook | None = None
    ) -> list[Tensor]:
        """Every layer's node embeddings [E0, ..., EL]."""
        if self.layers == 0 or adj is None:
            return [self.ego()]
        return propagate(adj, self.ego(), self.layers, hook)

    def combine(self, outs: list[Tensor], include_ego: bool = True) -> tuple[Tensor, Tensor]:
        """Mean over layers, split into (users (U, D), items (I, D))."""
        use = outs if include_ego or len(outs) == 1 else outs[1:]
        final = torch.stack(use).mean(0)
        return final[: self.n_users], final[self.n_users :]

    def forward(
        self, adj: Tensor | Sequence[Tensor] | None, hook: LayerHook | None = None, include_ego: bool = True
    ) -> tuple[Tensor, Tensor]:
        return self.combine(self.layer_outputs(adj, hook), include_ego)
