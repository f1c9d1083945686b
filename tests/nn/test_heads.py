"""MLP projection / prediction heads: structure, shapes, batch norm, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contrastkit.errors import UserError
from contrastkit.nn import MLPHead, ProjectionHead


def _count(head: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in head.modules())


@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_depth_width_and_output_shape(layers: int) -> None:
    head = MLPHead(10, 32, 6, num_layers=layers)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == layers
    assert linears[0].in_features == 10 and linears[-1].out_features == 6
    assert all(lin.out_features == 32 for lin in linears[:-1])
    assert _count(head, nn.BatchNorm1d) == layers - 1
    assert _count(head, nn.ReLU) == layers - 1
    assert head(torch.randn(5, 10)).shape == (5, 6)


def test_single_layer_is_one_linear() -> None:
    head = MLPHead(8, 99, 4, num_layers=1)
    assert len(list(head.modules())) == 3  # MLPHead, Sequential, Linear
    x = torch.randn(3, 8)
    lin = head.net[0]
    assert isinstance(lin, nn.Linear)
    torch.testing.assert_close(head(x), x @ lin.weight.T + lin.bias)


def test_batch_norm_options() -> None:
    assert _count(MLPHead(8, 16, 4, num_layers=3, batch_norm=False), nn.BatchNorm1d) == 0
    head = MLPHead(8, 16, 4, num_layers=2, last_batch_norm=True, last_affine=False)
    last = head.net[-1]
    assert isinstance(last, nn.BatchNorm1d) and not last.affine
    out = head.train()(torch.randn(64, 8))
    # the last batch norm standardises each output feature over the batch
    torch.testing.assert_close(out.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)


def test_bias_and_activation() -> None:
    head = MLPHead(8, 16, 4, num_layers=3, bias=False, activation="gelu")
    assert all(m.bias is None for m in head.modules() if isinstance(m, nn.Linear))
    assert _count(head, nn.GELU) == 2 and _count(head, nn.ReLU) == 0


def test_gradient_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(6, 12, 3, num_layers=3, last_batch_norm=True)
    x = torch.randn(16, 6, requires_grad=True)
    head(x).pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_arguments() -> None:
    with pytest.raises(UserError, match=r"num_layers.*>= 1.*0"):
        MLPHead(8, 16, 4, num_layers=0)
    with pytest.raises(UserError, match=r"out_dim.*0"):
        MLPHead(8, 16, 0)
    with pytest.raises(UserError, match=r"unknown activation 'rleu'.*did you mean 'relu'"):
        MLPHead(8, 16, 4, activation="rleu")
    with pytest.raises(UserError, match=r"\(batch, 8\).*\(2, 7\)"):
        MLPHead(8, 16, 4)(torch.randn(2, 7))


def test_architecture_names_only_what_nn_exports() -> None:
    """docs/architecture.md's row for nn/ names what `contrastkit.nn` exports, and all of it."""
    import re
    from pathlib import Path

    import contrastkit.nn

    doc = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| `nn/` |"))
    named = set(re.findall(r"`(\w+)`", row)) - {"nn"}
    assert named == set(contrastkit.nn.__all__)
    assert all(hasattr(contrastkit.nn, name) for name in contrastkit.nn.__all__)
