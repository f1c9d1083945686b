"""Image encoders (backbones): (B, C, H, W) float → (B, out_dim) features after global pooling.

`small_resnet` (basic-block ResNet, He et al. 2016, arXiv:1512.03385), `convnet5` (the 5-layer
CNN of lightly's benchmarks), torchvision's `resnet18`/`resnet50`, and any timm model as
``timm/<name>`` (random init, pooled features; timm is optional).

The stem of the ResNets (``model.cifar_stem``): the CIFAR stem (3×3 stride-1 first conv, no
max-pool, as in SimCLR's CIFAR setup) keeps full resolution; the other (a stride-2 conv and a
3×3 stride-2 max-pool, as torchvision's ResNets) shrinks the image 4× before the first stage.
``auto`` (the default) chooses from the image size: the CIFAR stem up to 32 px for small_resnet
and below 64 px for resnet18 / resnet50 (where the last stage would otherwise be under 2 px),
the downsampling stem above.
"""

from __future__ import annotations

import difflib
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # imported where a ResNet is built: torchvision (and torch._dynamo, which it imports) cost
    from torchvision.models import ResNet  # ~2.5 s, e.g. to the launcher of `--nproc`, which only reads the config

from contrastkit.errors import UserError, check_choice, closest, install_hint
from contrastkit.nn.heads import HeadOptions
from contrastkit.options import option

IMAGE_ENCODERS: tuple[str, ...] = ("small_resnet", "convnet5", "resnet18", "resnet50")
STEM_ENCODERS: tuple[str, ...] = ("small_resnet", "resnet18", "resnet50")  # the ones model.cifar_stem applies to
TIMM_PREFIX = "timm/"
# timm.create_model arguments the data or contrastkit decide (model.timm_kwargs may not set them)
TIMM_FIXED = {
    "pretrained": "contrastkit never downloads weights; start from saved ones with model.init_from",
    "num_classes": "the encoder gives pooled features (num_classes=0)",
    "in_chans": "the data decides the input channels",
    "img_size": "data.image_size decides the input size",
}


class ImageEncoder(nn.Module):
    """Base class: forward maps (B, C, H, W) float images to (B, out_dim) features.

    ``classifier``: key prefixes of a classifier that the encoder's library twin has and the
    encoder has not (dropped when weights are loaded, see contrastkit.encoders.weights)."""

    out_dim: int
    classifier: tuple[str, ...] = ()


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
    """ResNet for small images: 3×3 stem, 3 stages (w, 2w, 4w; stride 1, 2, 2), global average pool.
    ``cifar_stem`` False: the stem conv has stride 2 and a 3×3 stride-2 max-pool follows (4× smaller
    maps into the stages, for images above 32 px)."""

    def __init__(self, in_channels: int, width: int = 32, blocks: int = 2, cifar_stem: bool = True) -> None:
        super().__init__()
        widths = (width, 2 * width, 4 * width)
        layers: list[nn.Module] = [*_conv_bn(in_channels, width, 1 if cifar_stem else 2), nn.ReLU(inplace=True)]
        if not cifar_stem:
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
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
    classifier = ("net.fc.",)

    def __init__(self, depth: int, in_channels: int, cifar_stem: bool = True) -> None:
        from torchvision.models import resnet18, resnet50

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


class TimmEncoder(ImageEncoder):
    """A timm model (``timm.create_model(name, pretrained=False, num_classes=0, in_chans=C, ...)``:
    random init, pooled features of ``num_features`` dims); ViTs and other models that take
    ``img_size`` get the data's size. ``create_kwargs``: every argument given to create_model."""

    def __init__(self, name: str, in_channels: int, image_size: int, kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        timm = require_timm(f"model.encoder {TIMM_PREFIX + name!r}")
        if not name or not timm.is_model(name):
            raise UserError(f"unknown timm model {name!r}{_timm_hint(timm, name)}")
        extra = dict(kwargs or {})
        for key, why in TIMM_FIXED.items():
            if key in extra:
                raise UserError(f"model.timm_kwargs.{key} cannot be set: {why}")
        fixed: dict[str, Any] = {"pretrained": False, "num_classes": 0, "in_chans": in_channels}
        try:
            try:
                net = timm.create_model(name, **fixed, img_size=image_size, **extra)
                extra = {"img_size": image_size, **extra}
            except TypeError as exc:  # a model without img_size (CNNs): their input size is free
                if "img_size" not in str(exc):
                    raise
                net = timm.create_model(name, **fixed, **extra)
        except (TypeError, ValueError, AssertionError, RuntimeError, KeyError) as exc:
            args = ", ".join(f"{k}={v!r}" for k, v in {**fixed, **extra}.items())
            raise UserError(f"timm.create_model({name!r}, {args}) failed: {_first_line(exc)}") from None
        self.net = net
        self.name = name
        self.create_kwargs: dict[str, Any] = {**fixed, **extra}
        head = (getattr(net, "pretrained_cfg", None) or {}).get("classifier") or ()
        self.classifier = tuple(f"net.{h}." for h in ([head] if isinstance(head, str) else head))
        self.out_dim = self._probe(in_channels, image_size)

    def _probe(self, channels: int, size: int) -> int:
        """The width of the pooled features (``num_features``, or a head's hidden width where the
        model has one), from one forward pass of a blank image (eval mode, no gradient: nothing
        changes) — so that an input the model cannot take is a one-line error now."""
        was_training = self.net.training
        try:
            with torch.no_grad():
                out = self.net.eval()(torch.zeros(1, channels, size, size))
            if out.dim() != 2:
                raise UserError(f"timm/{self.name} gives features of shape {tuple(out.shape)} for one image, not pooled "
                                "vectors; choose a model with a pooling head")
            return int(out.shape[1])
        except (RuntimeError, ValueError, AssertionError) as exc:
            hint = ""
            patch = getattr(getattr(self.net, "patch_embed", None), "patch_size", None)
            if patch is not None:
                hint = f"; set model.timm_kwargs.patch_size to a divisor of {size} (e.g. {{patch_size: {_divisor(size)}}})"
            raise UserError(f"timm/{self.name} cannot take {channels}×{size}×{size} images: {_first_line(exc)}{hint}") from None
        finally:
            self.net.train(was_training)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out


def require_timm(what: str) -> Any:
    """The timm module, or a one-line error saying how to install it."""
    try:
        import timm
    except ImportError:
        raise UserError(f"{what} needs the optional package timm, which is not installed: pip install timm "
                        f"(or {install_hint('timm')})") from None
    return timm


def _timm_hint(timm: Any, name: str) -> str:
    close = difflib.get_close_matches(name, list(timm.list_models()), n=3, cutoff=0.6)
    found = f" (close: {', '.join(close)})" if close else ""
    return f"{found}; timm.list_models('*{name.split('_')[0]}*') lists the names like it"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _divisor(size: int) -> int:
    return next(p for p in (4, 2, 1) if size % p == 0)


def full_resolution_stem(name: str, cifar_stem: bool | str, image_size: int) -> bool:
    """Whether encoder ``name`` gets the CIFAR stem (full resolution into the first stage):
    ``cifar_stem`` itself, or for ``"auto"`` from the image size (see the module's doc)."""
    if cifar_stem != "auto":
        return bool(cifar_stem)
    return image_size <= (32 if name == "small_resnet" else 63)


def build_image_encoder(
    name: str,
    in_channels: int,
    *,
    width: int = 32,
    cifar_stem: bool | str = "auto",
    image_size: int = 32,
    blocks: int = 2,
    timm_kwargs: dict[str, Any] | None = None,
) -> ImageEncoder:
    """Build a named image encoder with attribute `out_dim`; `width` and `blocks` (per stage)
    apply to small_resnet/convnet5, `cifar_stem` (True, False or "auto": from `image_size`) to
    the ResNets, `timm_kwargs` (extra create_model arguments) to ``timm/<name>``."""
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
    if name.startswith(TIMM_PREFIX):
        return TimmEncoder(name[len(TIMM_PREFIX):], in_channels, image_size, timm_kwargs)
    check_choice("image encoder", name, IMAGE_ENCODERS)
    cifar = full_resolution_stem(name, cifar_stem, image_size)
    if name == "small_resnet":
        return SmallResNet(in_channels, width=width, blocks=blocks, cifar_stem=cifar)
    if name == "convnet5":
        return ConvNet5(in_channels, width=width)
    if not cifar and image_size < 64:
        warnings.warn(
            f"{name} with the ImageNet stem shrinks {image_size}px images 32×; "
            "model.cifar_stem=true usually works better below 64 px",
            stacklevel=2,
        )
    return TorchvisionResNet(18 if name == "resnet18" else 50, in_channels, cifar_stem=cifar)


def describe_encoder(encoder: nn.Module, model: ModelConfig, size: int) -> list[str]:
    """What the run prints about its encoder: the stem ``auto`` chose, or the timm model built."""
    if isinstance(encoder, TimmEncoder):
        args = ", ".join(f"{k}={v!r}" for k, v in encoder.create_kwargs.items())
        params = sum(p.numel() for p in encoder.parameters())
        return [f"encoder {model.encoder}: {params / 1e6:.2f}M parameters, {encoder.out_dim}-d features, random init "
                f"(timm.create_model({encoder.name!r}, {args}))"]
    if model.cifar_stem != "auto" or model.encoder not in STEM_ENCODERS:
        return []
    if full_resolution_stem(model.encoder, "auto", size):
        return [f"encoder {model.encoder}: {size} px input → CIFAR stem (3×3 stride-1 conv, no max-pool) keeps full "
                f"resolution ({size} px into stage 1)"]
    inner = math.ceil(math.ceil(size / 2) / 2)
    return [f"encoder {model.encoder}: {size} px input → stem downsamples ×4 (stride-2 conv + max-pool; {inner} px into "
            "stage 1); model.cifar_stem=true keeps full resolution"]


@dataclass
class ModelConfig(HeadOptions):
    """The ``model:`` section of the image tasks: the image encoder (backbone), its starting
    weights and the methods' projection head."""

    encoder: str = option(
        "small_resnet", f"image encoder: {', '.join(IMAGE_ENCODERS)}, or timm/<name> (a timm model, random init)"
    )
    width: int = option(32, "base width (channels) of the encoder (small_resnet, convnet5)", ge=1)
    cifar_stem: bool | str = option(
        "auto", "ResNets: true = 3x3 stride-1 stem without max-pool (full resolution), false = downsampling stem "
        "(stride-2 conv + max-pool); auto: true up to 32 px (small_resnet) / below 64 px (resnet18, resnet50)"
    )
    timm_kwargs: dict[str, Any] = option(
        help="more timm.create_model arguments of a timm/ encoder, e.g. {patch_size: 4} (in_chans and a ViT's "
        "img_size come from the data)", factory=dict,
    )
    init_from: str | None = option(
        None, "start from these encoder weights: a run folder, or a .safetensors / .pt state dict "
        "(torchvision / timm layout); a fresh run only (a resumed run continues from its checkpoint)"
    )

    def check_values(self, prefix: str) -> None:
        if not self.encoder.startswith(TIMM_PREFIX) and self.encoder not in IMAGE_ENCODERS:
            allowed = sorted(IMAGE_ENCODERS)
            raise UserError(f"unknown {prefix}.encoder {self.encoder!r}{closest(self.encoder, allowed)}; "
                            f"allowed: {', '.join(allowed)}, or timm/<name> (a timm model)")
        if isinstance(self.cifar_stem, str) and self.cifar_stem != "auto":
            raise UserError(f"{prefix}.cifar_stem must be true, false or auto, got {self.cifar_stem!r}")
        if self.timm_kwargs and not self.encoder.startswith(TIMM_PREFIX):
            raise UserError(f"{prefix}.timm_kwargs applies to timm/<name> encoders; {prefix}.encoder is {self.encoder!r}")
        if self.init_from is not None and not self.init_from.strip():
            raise UserError(f"{prefix}.init_from is empty; name a run folder or a state-dict file (or leave it null)")


def build_encoder(model: ModelConfig, channels: int, size: int) -> ImageEncoder:
    """A fresh encoder as the ``model`` section describes it, for ``channels`` × ``size``² images."""
    return build_image_encoder(model.encoder, channels, width=model.width, cifar_stem=model.cifar_stem, image_size=size,
                               timm_kwargs=model.timm_kwargs)
