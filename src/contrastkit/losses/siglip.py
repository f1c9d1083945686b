"""SigLIP: the pairwise sigmoid loss for image–text pre-training (Zhai et al. 2023, arXiv:2303.15343).

Every (image i, text j) pair is an independent binary problem, positive when i == j:
``L = -1/N * sum_i sum_j log sigmoid(z_ij * (t * <x_i, y_j> + b))`` with z_ij = +1 on the
diagonal and -1 elsewhere, x and y L2-normalised, a learnable scale t = exp(t') (init 10) and
bias b (init -10). Unlike InfoNCE there is no softmax over the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.errors import UserError, check_choice
from contrastkit.negatives.distributed import gather_no_grad, gather_with_grad, rank_offset, world

REDUCTIONS = ("mean", "sum", "none")


def siglip_loss(
    x: Tensor,
    y: Tensor,
    scale: Tensor | float,
    bias: Tensor | float,
    *,
    normalize: bool = True,
    reduction: str = "mean",
    labels: Tensor | None = None,
    gather_distributed: bool = False,
) -> Tensor:
    """Pairwise sigmoid loss of x (N, D) against y (N, D); row i of x pairs with row i of y.

    ``reduction``: "mean" divides the sum over all N² pairs by N (the paper's normalisation),
    "sum" returns the plain sum, "none" the per-row sums (N,). Computed in float32 (float64 for
    float64 inputs). ``labels`` (N,), optional: pairs with equal labels are positives too.
    ``gather_distributed=True``: under torch.distributed each rank scores its rows of x against
    the y of the global batch (gathered with gradient), so every pair is counted once across
    ranks and DDP's average of the gradients is the global batch's; no-op without
    torch.distributed or with one process.

    Example::

        x, y = torch.randn(8, 32), torch.randn(8, 32)  # image and text embeddings
        loss = siglip_loss(x, y, scale=10.0, bias=-10.0)
    """
    check_choice("reduction", reduction, REDUCTIONS)
    if x.dim() != 2 or x.shape != y.shape:
        raise UserError(
            f"siglip_loss needs x and y of equal shape (N, D); got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    dtype = torch.float64 if torch.float64 in (x.dtype, y.dtype) else torch.float32
    a, b = x.to(dtype), y.to(dtype)
    if normalize:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    n = a.shape[0]
    if labels is not None and labels.shape != (n,):
        raise UserError(f"labels must have shape (N,) = ({n},); got {tuple(labels.shape)}")
    size = world()[1] if gather_distributed else 1
    key_labels = labels
    if size > 1:
        b = gather_with_grad(b)
        key_labels = gather_no_grad(labels) if labels is not None else None
    logits = (a @ b.T) * (scale.to(dtype) if isinstance(scale, Tensor) else float(scale))
    logits = logits + (bias.to(dtype) if isinstance(bias, Tensor) else float(bias))
    if labels is None or key_labels is None:
        cols = torch.arange(b.shape[0], device=a.device)
        rows = torch.arange(n, device=a.device) + (rank_offset(n) if size > 1 else 0)
        signs = 2.0 * (rows.unsqueeze(1) == cols.unsqueeze(0)).to(dtype) - 1.0
    else:
        signs = 2.0 * (labels.unsqueeze(1) == key_labels.unsqueeze(0)).to(dtype) - 1.0
    per_row = -F.logsigmoid(signs * logits).sum(1)
    if reduction == "none":
        return per_row
    total = per_row.sum()
    return total / max(n, 1) if reduction == "mean" else total


class SigLIPLoss(nn.Module):
    """:func:`siglip_loss` with the learnable log-scale t' and bias b (Zhai et al. 2023; their
    initialisation t = 10, b = -10 is the default). ``gather_distributed=True``: under
    torch.distributed the rows of x are scored against the y of every process.

    Example::

        loss_fn = SigLIPLoss()  # has parameters: give them to the optimiser too
        loss = loss_fn(torch.randn(8, 32), torch.randn(8, 32))
    """

    def __init__(
        self, scale_init: float = 10.0, bias_init: float = -10.0, learnable: bool = True, gather_distributed: bool = False
    ) -> None:
        super().__init__()
        if not scale_init > 0:
            raise UserError(f"SigLIP scale_init must be > 0, got {scale_init}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale_init)), requires_grad=learnable)
        self.bias = nn.Parameter(torch.tensor(float(bias_init)), requires_grad=learnable)
        self.gather_distributed = gather_distributed

    def forward(self, x: Tensor, y: Tensor, labels: Tensor | None = None) -> Tensor:
        return siglip_loss(
            x, y, self.log_scale.exp(), self.bias, labels=labels, gather_distributed=self.gather_distributed
        )

    def extra_repr(self) -> str:
        return f"scale={float(self.log_scale.exp()):.3g}, bias={float(self.bias):.3g}"
