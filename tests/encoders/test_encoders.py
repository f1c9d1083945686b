"""Image encoders: shapes, stems, channels_last parity, gradients, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contrastkit.encoders import IMAGE_ENCODERS, build_image_encoder
from contrastkit.encoders.image import BasicBlock, TorchvisionResNet
from contrastkit.errors import UserError
from contrastkit.training import channels_last_for

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: a second thread only spins


@pytest.mark.parametrize(
    ("name", "channels", "size", "out_dim"),
    [
        ("small_resnet", 1, 8, 128),  # 8×8 digits
        ("small_resnet", 3, 32, 128),
        ("convnet5", 1, 28, 128),
        ("resnet18", 3, 16, 512),
        ("resnet50", 1, 8, 2048),
    ],
)
def test_output_shapes(name: str, channels: int, size: int, out_dim: int) -> None:
    torch.manual_seed(0)
    model = build_image_encoder(name, channels)
    assert model.out_dim == out_dim
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, out_dim) and torch.isfinite(out).all()


def test_structure_of_each_encoder() -> None:
    small = build_image_encoder("small_resnet", 1, width=8, blocks=3)
    assert sum(isinstance(m, BasicBlock) for m in small.modules()) == 9 and small.out_dim == 32
    convs = [m for m in build_image_encoder("convnet5", 2).modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (2, 32, 1),
        (32, 64, 2),
        (64, 64, 1),
        (64, 128, 2),
        (128, 128, 1),
    ]
    model = build_image_encoder("resnet18", 1)
    assert isinstance(model, TorchvisionResNet)
    cifar = model.net
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert cifar.conv1.in_channels == 1 and isinstance(cifar.maxpool, nn.Identity)
    with pytest.warns(UserWarning, match="cifar_stem"):
        model = build_image_encoder("resnet18", 1, cifar_stem=False, image_size=32)
    assert isinstance(model, TorchvisionResNet)
    imagenet = model.net
    assert imagenet.conv1.kernel_size == (7, 7) and imagenet.conv1.stride == (2, 2)
    assert isinstance(imagenet.maxpool, nn.MaxPool2d) and isinstance(imagenet.fc, nn.Identity)


@pytest.mark.parametrize("name", ["small_resnet", "convnet5", "resnet18"])
def test_channels_last_gives_same_output(name: str) -> None:
    torch.manual_seed(0)
    model = build_image_encoder(name, 3, width=8).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_channels_last_skipped_where_the_cpu_kernel_overruns() -> None:
    """oneDNN's CPU weight gradient for a 1x1 convolution from 4 channels writes out of bounds in
    channels_last (valgrind); such encoders stay contiguous on CPU, and only there."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    narrow = build_image_encoder("small_resnet", 1, width=4)  # shortcut: 1x1 conv 4 -> 8, stride 2
    wide = build_image_encoder("small_resnet", 1, width=8)
    assert any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.in_channels == 4 for m in narrow.modules())
    assert channels_last_for(narrow, cpu, True) is False
    assert channels_last_for(narrow, cuda, True) is True
    assert channels_last_for(wide, cpu, True) is True
    assert channels_last_for(wide, cpu, False) is False


@pytest.mark.parametrize("name", ["small_resnet", "convnet5", "resnet18"])
def test_gradients_reach_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = build_image_encoder(name, 1, width=8)
    x = torch.randn(4, 1, 12, 12, requires_grad=True)
    out = model(x)
    (out * torch.randn_like(out)).sum().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname
        assert float(param.grad.abs().sum()) > 0, pname
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_bad_names_and_sizes() -> None:
    with pytest.raises(UserError, match="did you mean 'small_resnet'"):
        build_image_encoder("small-resnet", 3)
    with pytest.raises(UserError, match="width must be a positive integer"):
        build_image_encoder("convnet5", 3, width=0)
    assert set(IMAGE_ENCODERS) == {"small_resnet", "convnet5", "resnet18", "resnet50"}
