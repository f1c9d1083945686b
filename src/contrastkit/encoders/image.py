"""Image encoders (backbones): (B, C, H, W) float → (B, out_dim) features after global pooling.

`small_resnet` (basic-block ResNet for images up to 32 px, He et al. 2016, arXiv:1512.03385),
`convnet5` (the 5-layer CNN of lightly's benchmarks), and torchvision's `resnet18`/`resnet50`
with an optional CIFAR stem (3×3 stride-1 first conv, no max-pool, as in SimCLR's CIFAR setup).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from torch import Tensor, nn
from torchvision.models import ResNet, resnet18, resnet50

from contrastkit.errors import UserError, check_choice
from contrastkit.nn.heads import HeadOptions
from contrastkit.options import option

IMAGE_ENCODERS: tuple[str, ...] = ("small_resnet", "convnet5", "resnet18", "resnet50")


class ImageEncoder(nn.Module):
    """Base class: forward maps (B, C, H, W) float images to (B, out_dim) features."""

    out_dim: int


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]


def _init_weights(module: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, ReLU) and unit/zero BatchNorm, as torchvision's ResNet."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """Two 3×3 conv + BN layers with an identity (or 1×1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(cin, cout, stride), nn.ReLU(inplace=True), *_conv_bn(cout, cout)
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class SmallResNet(ImageEncoder):
    """ResNet for small images: 3×3 stem, 3 stages (w, 2w, 4w; stride 1, 2, 2), global average pool."""

    def __init__(self, in_channels: int, width: int = 32, blocks: int = 2) -> None:
        super().__init__()
        widths = (width, 2 * width, 4 * width)
        layers: list[nn.Module] = [*_conv_bn(in_channels, width), nn.ReLU(inplace=True)]
        cin = width
        for cout, stride in zip(widths, (1, 2, 2), strict=True):
            for i in range(blocks):
                layers.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = widths[-1]
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x))


class ConvNet5(ImageEncoder):
    """Five 3×3 conv + BN + ReLU layers (w, 2w s2, 2w, 4w s2, 4w) and global average pool; w=32 gives 128-d."""

    def __init__(self, in_channels: int, width: int = 32) -> None:
        super().__init__()
        plan = [(width, 1), (2 * width, 2), (2 * width, 1), (4 * width, 2), (4 * width, 1)]
        layers: list[nn.Module] = []
        cin = in_channels
        for cout, stride in plan:
            layers += [*_conv_bn(cin, cout, stride), nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = cin
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x))


class TorchvisionResNet(ImageEncoder):
    """torchvision ResNet-18/50 (random init), fc removed; CIFAR stem optional; any input channels."""

    net: ResNet

    def __init__(self, depth: int, in_channels: int, cifar_stem: bool = True) -> None:
        super().__init__()
        net = resnet18(weights=None) if depth == 18 else resnet50(weights=None)
        if cifar_stem:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.out_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out


def build_image_encoder(
    name: str,
    in_channels: int,
    *,
    width: int = 32,
    cifar_stem: bool = True,
    image_size: int = 32,
    blocks: int = 2,
) -> ImageEncoder:
    """Build a named image encoder with attribute `out_dim`; `width` and `blocks` (per stage)
    apply to small_resnet/convnet5, `cifar_stem` to the torchvision ResNets."""
    check_choice("image encoder", name, IMAGE_ENCODERS)
    for key, value in (
        ("in_channels", in_channels),
        ("width", width),
        ("blocks", blocks),
        ("image_size", image_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(
                f"image encoder {name}: {key} must be a positive integer, got {value!r}"
            )
    if name == "small_resnet":
        return SmallResNet(in_channels, width=width, blocks=blocks)
    if name == "convnet5":
        return ConvNet5(in_channels, width=width)
    if not cifar_stem and image_size < 64:
        warnings.warn(
            f"{name} with the ImageNet stem shrinks {image_size}px images 32×; "
            "model.cifar_stem=true usually works better below 64 px",
            stacklevel=2,
        )
    return TorchvisionResNet(18 if name == "resnet18" else 50, in_channels, cifar_stem=cifar_stem)


@dataclass
class ModelConfig(HeadOptions):
    """The ``model:`` section of the image tasks: the image encoder (backbone) and the methods'
    projection head."""

    encoder: str = option("small_resnet", "image encoder", choices=IMAGE_ENCODERS)
    width: int = option(32, "base width (channels) of the encoder", ge=1)
    cifar_stem: bool = option(True, "3x3 stem without max-pool for small images (ResNets)")


def build_encoder(model: ModelConfig, channels: int, size: int) -> ImageEncoder:
    """A fresh encoder as the ``model`` section describes it, for ``channels`` × ``size``² images."""
    return build_image_encoder(model.encoder, channels, width=model.width, cifar_stem=model.cifar_stem, image_size=size)
