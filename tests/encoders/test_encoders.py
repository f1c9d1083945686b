"""Image encoders: shapes, stems, channels_last parity, gradients, errors."""

from __future__ import annotations

import warnings

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


def test_auto_stem_keeps_small_images_as_before_and_downsamples_large_ones() -> None:
    """model.cifar_stem=auto: up to 32 px small_resnet is the network it always was (same
    weights from the same seed, same output); above, the stem shrinks the image 4× (128 px → 32
    px into stage 1), and true keeps full resolution. The ResNets switch at 64 px."""
    from contrastkit.encoders.image import ModelConfig, SmallResNet, describe_encoder

    for size in (8, 32):
        torch.manual_seed(0)
        auto = build_image_encoder("small_resnet", 1, image_size=size).eval()
        torch.manual_seed(0)
        before = SmallResNet(1).eval()  # the constructor as it always was
        x = torch.randn(2, 1, size, size)
        assert auto.state_dict().keys() == before.state_dict().keys()
        assert all(torch.equal(a, b) for a, b in zip(auto.state_dict().values(), before.state_dict().values(), strict=True))
        assert torch.equal(auto(x), before(x))
    x = torch.randn(1, 3, 128, 128)
    down = build_image_encoder("small_resnet", 3, image_size=128)
    full = build_image_encoder("small_resnet", 3, image_size=128, cifar_stem=True)
    assert down.features[:4](x).shape[-2:] == (32, 32) and full.features[:3](x).shape[-2:] == (128, 128)
    assert down(x).shape == full(x).shape == (1, 128)
    line = describe_encoder(down, ModelConfig(), 128)
    assert line == ["encoder small_resnet: 128 px input → stem downsamples ×4 (stride-2 conv + max-pool; 32 px into "
                    "stage 1); model.cifar_stem=true keeps full resolution"]
    assert "keeps full resolution (32 px into stage 1)" in describe_encoder(full, ModelConfig(), 32)[0]
    assert describe_encoder(full, ModelConfig(cifar_stem=True), 128) == []  # chosen by the user: nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto never picks the stem the ResNets warn about
        stems = {size: isinstance(build_image_encoder("resnet18", 1, image_size=size).net.maxpool, nn.Identity)
                 for size in (32, 63, 64)}
    assert stems == {32: True, 63: True, 64: False}


@pytest.fixture
def timm_available() -> None:
    pytest.importorskip("timm", reason="timm is not installed (pip install 'contrastkit[timm]')")


@pytest.mark.usefixtures("timm_available")
def test_timm_encoders_pool_features_for_the_data_and_train() -> None:
    """timm/<name>: random init, pooled features (out_dim from the model), in_chans and a ViT's
    img_size from the data; gradients reach every parameter; channels_last gives the same output."""
    from contrastkit.encoders.image import TimmEncoder

    torch.manual_seed(0)
    vit = build_image_encoder("timm/vit_tiny_patch16_224", 1, image_size=8, timm_kwargs={"patch_size": 4, "depth": 2})
    assert isinstance(vit, TimmEncoder) and vit.out_dim == 192 == vit.net.num_features
    assert vit.create_kwargs == {"pretrained": False, "num_classes": 0, "in_chans": 1, "img_size": 8, "patch_size": 4,
                                 "depth": 2}
    x = torch.randn(4, 1, 8, 8, requires_grad=True)
    out = vit(x)
    assert out.shape == (4, 192)
    (out * torch.randn_like(out)).sum().backward()
    for pname, param in vit.named_parameters():
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, pname
    for name, size in (("timm/convnext_atto", 32), ("timm/resnet18", 16)):
        model = build_image_encoder(name, 3, image_size=size).eval()
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            ref = model(x)
            assert ref.shape == (2, model.out_dim) == (2, model.net.num_features)
            assert channels_last_for(model, torch.device("cpu"), True) is True
            got = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.usefixtures("timm_available")
def test_timm_mistakes_are_one_line_errors() -> None:
    cases = [
        ("timm/vit_tny_patch16_224", {}, 8, "unknown timm model 'vit_tny_patch16_224' (close: vit_tiny_patch16_224"),
        ("timm/resnet18", {"pretrained": True}, 8, "model.timm_kwargs.pretrained cannot be set: contrastkit never downloads"),
        ("timm/resnet18", {"in_chans": 3}, 8, "model.timm_kwargs.in_chans cannot be set"),
        ("timm/resnet18", {"stem_widht": 3}, 8, "timm.create_model('resnet18', pretrained=False, num_classes=0, in_chans=1, "
                                               "stem_widht=3) failed: ResNet.__init__() got an unexpected keyword"),
        ("timm/vit_tiny_patch16_224", {}, 8, "timm/vit_tiny_patch16_224 cannot take 1×8×8 images: "),
    ]
    for name, kwargs, size, message in cases:
        with pytest.raises(UserError) as info:
            build_image_encoder(name, 1, image_size=size, timm_kwargs=kwargs)
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
    with pytest.raises(UserError, match=r"set model.timm_kwargs.patch_size to a divisor of 8 \(e.g. \{patch_size: 4\}\)"):
        build_image_encoder("timm/vit_tiny_patch16_224", 1, image_size=8)


def test_without_timm_a_timm_encoder_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(UserError, match=r"model.encoder 'timm/resnet18' needs the optional package timm, which is not "
                                        r"installed: pip install timm"):
        build_image_encoder("timm/resnet18", 3)


def test_model_section_accepts_timm_names_and_checks_its_keys() -> None:
    from contrastkit.recipes import load_config

    cfg = load_config("digits-simclr", ["model.encoder=timm/vit_tiny_patch16_224", "model.timm_kwargs={patch_size: 4}"])
    assert cfg.model.timm_kwargs == {"patch_size": 4} and cfg.model.cifar_stem == "auto"
    for overrides, message in (
        (["model.encoder=resnet19"], "unknown model.encoder 'resnet19' (did you mean 'resnet18'?); allowed: convnet5, "
                                     "resnet18, resnet50, small_resnet, or timm/<name> (a timm model)"),
        (["model.cifar_stem=maybe"], "model.cifar_stem must be true, false or auto, got 'maybe'"),
        (["model.timm_kwargs={patch_size: 4}"], "model.timm_kwargs applies to timm/<name> encoders; model.encoder is "
                                                "'small_resnet'"),
    ):
        with pytest.raises(UserError) as info:
            load_config("digits-simclr", overrides)
        assert message in str(info.value), str(info.value)
