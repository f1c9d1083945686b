"""Projection / prediction MLP heads (SimCLR projection head, Chen et al. 2020,
arXiv:2002.05709; BYOL / SimSiam predictors use the same block)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from contrastkit.errors import UserError, check_choice
from contrastkit.options import option

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class MLPHead(nn.Module):
    """MLP of ``num_layers`` Linear layers: (Linear → [BatchNorm] → activation) x (L−1) → Linear
    → [BatchNorm if last_batch_norm]. num_layers=1 is a single Linear (in_dim → out_dim).

    ``bias`` applies to every Linear (set False where BatchNorm follows, as SimSiam does);
    ``last_affine=False`` gives the last BatchNorm no learnable scale/shift (SimSiam projector).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        *,
        batch_norm: bool = True,
        last_batch_norm: bool = False,
        last_affine: bool = True,
        bias: bool = True,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if not isinstance(value, int) or value < 1:
                raise UserError(f"MLPHead {name} must be a positive integer; got {value!r}")
        if not isinstance(num_layers, int) or num_layers < 1:
            raise UserError(f"MLPHead num_layers must be an integer >= 1; got {num_layers!r}")
        check_choice("activation", activation, ACTIVATIONS)
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        self.num_layers = num_layers
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(width, hidden_dim, bias=bias))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(ACTIVATIONS[activation]())
            width = hidden_dim
        layers.append(nn.Linear(width, out_dim, bias=bias))
        if last_batch_norm:
            layers.append(nn.BatchNorm1d(out_dim, affine=last_affine))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise UserError(
                f"MLPHead expects input (batch, {self.in_dim}); got shape {tuple(x.shape)}"
            )
        out: Tensor = self.net(x)
        return out


ProjectionHead = MLPHead


@dataclass
class HeadOptions:
    """The projection head of an image method (the recipe's ``model.projection_*`` keys)."""

    projection_dim: int = option(128, "width of the projection (the loss's embedding)", ge=1)
    projection_hidden_dim: int = option(512, "hidden width of the projection MLP", ge=1)
    projection_layers: int = option(2, "linear layers of the projection MLP", ge=1)
    projection_batch_norm: bool = option(True, "BatchNorm in the projection MLP's hidden layers")
