"""Matryoshka representation learning (Kusupati et al. 2022, arXiv:2205.13147): one loss applied to
nested prefixes of the embeddings, so that the first d coordinates alone are a usable embedding.

``matryoshka_loss(loss_fn, [z1, z2, ...], dims, weights)`` = ``sum_d w_d * loss_fn(z1[:, :d],
z2[:, :d], ...)``: every embedding tensor is cut to its first d coordinates (the same d for all of
them) and the same loss is applied. With a cosine similarity inside ``loss_fn`` (InfoNCE with
``similarity="cosine"``, CoSENT, AnglE) the cut embeddings are re-normalised by the loss itself;
``normalize=True`` L2-normalises each cut before the loss for losses that do not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.errors import UserError


def check_matryoshka(dims: Sequence[int], weights: Sequence[float], width: int | None = None) -> None:
    """One-line errors for nested sizes that are not positive, repeated or wider than ``width``,
    and for weights that do not match them."""
    if not dims:
        raise UserError("Matryoshka dims must list at least one embedding size, e.g. [384, 256, 128, 64]")
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims) or len(set(dims)) != len(dims):
        raise UserError(f"Matryoshka dims must be distinct positive integers; got {list(dims)}")
    if width is not None and max(dims) > width:
        raise UserError(f"Matryoshka dims {list(dims)} exceed the embedding width {width}")
    if weights and len(weights) != len(dims):
        raise UserError(f"Matryoshka weights {list(weights)} must be one per dim {list(dims)} (or none: all 1)")
    if any(not w >= 0 for w in weights):
        raise UserError(f"Matryoshka weights must be >= 0; got {list(weights)}")


def matryoshka_loss(
    loss_fn: Callable[..., Tensor],
    embeddings: Sequence[Tensor],
    dims: Sequence[int],
    weights: Sequence[float] = (),
    *,
    normalize: bool = False,
    parts: dict[int, Tensor] | None = None,
) -> Tensor:
    """``sum_d weights[d] * loss_fn(*(e[..., :d] for e in embeddings))`` over the nested sizes
    ``dims`` (weights default to 1). ``parts``: a dict that receives each size's loss.

    Example::

        from contrastkit.losses import info_nce
        q, k = torch.randn(8, 64), torch.randn(8, 64)
        loss = matryoshka_loss(lambda a, b: info_nce(a, b, temperature=0.05), [q, k], dims=[64, 32, 16])
    """
    check_matryoshka(dims, weights, min(int(e.shape[-1]) for e in embeddings))
    total: Tensor | None = None
    for i, d in enumerate(dims):
        cut = [e[..., :d] for e in embeddings]
        if normalize:
            cut = [F.normalize(c, dim=-1) for c in cut]
        part = loss_fn(*cut)
        if parts is not None:
            parts[d] = part
        term = part * (float(weights[i]) if weights else 1.0)
        total = term if total is None else total + term
    assert total is not None
    return total


class MatryoshkaLoss(nn.Module):
    """Wrap a loss module (or function) of embedding tensors: :func:`matryoshka_loss` over
    ``dims`` with ``weights``; extra keyword arguments (scores, labels) go to the loss unchanged.

    Example::

        loss_fn = MatryoshkaLoss(NTXentLoss(temperature=0.1), dims=[64, 32, 16])
        loss = loss_fn(torch.randn(8, 64), torch.randn(8, 64))
    """

    def __init__(
        self, loss: Callable[..., Tensor], dims: Sequence[int], weights: Sequence[float] = (), normalize: bool = False
    ) -> None:
        super().__init__()
        check_matryoshka(dims, weights)
        self.loss = loss
        self.dims = [int(d) for d in dims]
        self.weights = [float(w) for w in weights]
        self.normalize = normalize

    def forward(self, *embeddings: Tensor, **kwargs: object) -> Tensor:
        return matryoshka_loss(
            lambda *cut: self.loss(*cut, **kwargs), embeddings, self.dims, self.weights, normalize=self.normalize
        )

    def extra_repr(self) -> str:
        return f"dims={self.dims}, weights={self.weights or 'all 1'}"
