"""`--format torchvision` / `--format timm`: the image encoder as a state dict in the library's
own key layout, loadable with ``strict=True`` into its constructor.

Our ``resnet18`` / ``resnet50`` encoders *are* torchvision ResNets (wrapped, ``fc`` removed,
optionally with the CIFAR stem: a 3×3 stride-1 first conv and no max-pool), and timm's ResNets
use the same parameter names, so one state dict serves both. The file is safetensors unless
``--out`` ends in ``.pt`` / ``.pth`` (a plain ``torch.save`` dict). The printed snippet — built
here, run here on sample images and checked against `contrastkit embed` — rebuilds the model,
applies the stem change, loads the weights strictly and computes the same features, input
normalisation included. A ``timm/<name>`` encoder is a timm model already: ``--format timm``
writes its state dict and the ``timm.create_model`` call it was built with.
``small_resnet`` / ``convnet5`` have no equivalent in either library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch

from contrastkit.encoders.image import TIMM_PREFIX
from contrastkit.errors import UserError, install_hint
from contrastkit.export.towers import ImageTower, check_parity

BACKBONES: tuple[str, ...] = ("resnet18", "resnet50")  # model.encoder values with a library twin
TORCH_SUFFIXES: tuple[str, ...] = (".pt", ".pth")


def check_backbone(arch: str, fmt: str) -> None:
    """The one-line errors before the run is loaded: an encoder without a twin, timm missing."""
    timm_model = arch.startswith(TIMM_PREFIX)
    if arch not in BACKBONES and not (timm_model and fmt == "timm"):
        also = "; timm/<name> encoders export to timm" if timm_model else ""
        raise UserError(
            f"image encoder {arch!r} has no {fmt} equivalent (only {', '.join(BACKBONES)} do{also}); "
            "export it with --format onnx or --format arrays"
        )
    if fmt == "timm":
        try:
            import timm  # noqa: F401
        except ImportError:
            raise UserError(f"--format timm needs the optional package timm: {install_hint('export')}") from None


def export_backbone(tower: ImageTower, fmt: str, out: Path) -> list[str]:
    """Write the state dict to ``out``; return the report lines (snippet and parity included)."""
    check_backbone(tower.arch, fmt)
    state = _state_dict(tower)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix in TORCH_SUFFIXES:
        torch.save(state, out)
    else:
        from contrastkit.training import save_safetensors

        save_safetensors(state, out)
    code = snippet(tower, fmt, out)
    scope: dict[str, Any] = {"images": tower.samples.clone()}
    exec(compile(code, f"<{fmt} snippet>", "exec"), scope)  # the snippet as printed, on sample images
    diff = check_parity(f"{fmt} state dict", scope["features"], tower.reference(tower.samples))
    kind = "torch.save dict" if out.suffix in TORCH_SUFFIXES else "safetensors"
    return [
        f"wrote {out} ({kind}, {len(state)} tensors, {fmt} {tower.arch.removeprefix(TIMM_PREFIX)} key layout)",
        f"parity with contrastkit embed on {tower.samples.shape[0]} images: max abs diff {diff:.2e}",
        f"input normalisation: mean {_floats(tower.mean)}, std {_floats(tower.std)} (pixels / 255 first)",
        "load it with:",
        "",
        *("    " + line if line else "" for line in code.splitlines()),
    ]


def _state_dict(tower: ImageTower) -> dict[str, torch.Tensor]:
    """Our TorchvisionResNet and TimmEncoder keep the library's model as ``.net`` (fc an
    Identity): drop that prefix; an image_text run's projection becomes ``fc`` (a Linear without
    bias), or for a timm model the second module of ``nn.Sequential(model, projection)``."""
    state = {k.removeprefix("net."): v.detach().clone() for k, v in tower.encoder.state_dict().items()}
    if tower.proj is not None and hasattr(tower.encoder, "create_kwargs"):
        return {**{f"0.{k}": v for k, v in state.items()}, "1.weight": tower.proj.weight.detach().clone()}
    if tower.proj is not None:
        state["fc.weight"] = tower.proj.weight.detach().clone()
    return state


def _floats(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.9g}" for v in values) + "]"


def snippet(tower: ImageTower, fmt: str, out: Path) -> str:
    """Python that builds the constructor, changes the stem, loads ``out`` strictly and computes
    ``features`` of uint8 ``images`` (N, C, H, W) as `contrastkit embed` does."""
    c, size, arch = tower.channels, tower.size, tower.arch
    width = 512 if arch == "resnet18" else 2048
    timm_kwargs = getattr(tower.encoder, "create_kwargs", None)  # a timm/<name> encoder: how it was built
    if timm_kwargs is not None:
        args = "".join(f", {k}={v!r}" for k, v in timm_kwargs.items())
        lines = ["import timm", "import torch"]
        build = [f"model = timm.create_model({arch.removeprefix(TIMM_PREFIX)!r}{args})"]
        width = int(cast(Any, tower.encoder).out_dim)
    elif fmt == "timm":
        lines = ["import timm", "import torch"]
        build = [f"model = timm.create_model({arch!r}, pretrained=False, num_classes=0, in_chans={c})"]
    else:
        lines = ["import torch", "import torchvision"]
        build = [f"model = torchvision.models.{arch}(weights=None)"]
        if c != 3 and not tower.cifar_stem:
            build.append(
                f"model.conv1 = nn.Conv2d({c}, 64, kernel_size=7, stride=2, padding=3, bias=False)  # {c} input channel(s)"
            )
    if out.suffix in TORCH_SUFFIXES:
        load = f"torch.load({str(out)!r}, weights_only=True)"
    else:
        lines.append("from safetensors.torch import load_file")
        load = f"load_file({str(out)!r})"
    lines += ["from torch import nn", "", *build]
    if tower.cifar_stem and timm_kwargs is None:
        lines += [
            f"model.conv1 = nn.Conv2d({c}, 64, kernel_size=3, stride=1, padding=1, bias=False)  # CIFAR stem: 3×3 conv, stride 1",
            "model.maxpool = nn.Identity()  # CIFAR stem: no max-pool",
        ]
    if tower.proj is not None and timm_kwargs is not None:
        lines.append(f"model = nn.Sequential(model, nn.Linear({width}, {tower.out_dim}, bias=False))  # the image_text "
                     "projection")
    elif tower.proj is not None:
        lines.append(f"model.fc = nn.Linear({width}, {tower.out_dim}, bias=False)  # the image_text projection")
    elif fmt != "timm":
        lines.append(f"model.fc = nn.Identity()  # {width}-d features, no classifier")
    lines += [
        f"model.load_state_dict({load}, strict=True)",
        "model.eval()",
        f"mean = torch.tensor({_floats(tower.mean)}).view(1, -1, 1, 1)",
        f"std = torch.tensor({_floats(tower.std)}).view(1, -1, 1, 1)",
        f"# images: uint8 (N, {c}, {size}, {size}); resize others to {size}×{size} first (bilinear, antialiased)",
        "with torch.no_grad():",
        f"    features = model((images.float() / 255 - mean) / std)  # (N, {tower.out_dim}), as contrastkit embed",
    ]
    return "\n".join(lines) + "\n"
