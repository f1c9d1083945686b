"""Batched augmentations: reproducibility, per-sample params, closed forms, torchvision parity."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from contrastkit.data.image import (
    AUGMENTATIONS,
    build_augmentation,
    default_augmentation,
    eval_transform,
)
from contrastkit.data.image.augment import (
    BatchAugmentation,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
)
from contrastkit.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN3, STD3 = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]

FULL: list[dict[str, Any]] = [
    {"op": "random_resized_crop", "scale": [0.2, 1.0]},
    {"op": "horizontal_flip", "p": 0.5},
    {"op": "rotation", "degrees": 20, "p": 0.5},
    {
        "op": "color_jitter",
        "brightness": 0.4,
        "contrast": 0.4,
        "saturation": 0.4,
        "hue": 0.1,
        "random_order": True,
        "p": 0.8,
    },
    {"op": "random_grayscale", "p": 0.3},
    {"op": "gaussian_blur", "sigma": [0.1, 2.0], "kernel_size": 5, "p": 0.5},
    {"op": "solarize", "threshold": 0.5, "p": 0.3},
    {"op": "gaussian_noise", "std": [0.01, 0.1], "p": 0.5},
]


def _aug(spec: list[dict[str, Any]], size: int = 16, channels: int = 3) -> BatchAugmentation:
    mean, std = (MEAN3, STD3) if channels == 3 else ([0.5], [0.25])
    return build_augmentation(spec, size=size, channels=channels, mean=mean, std=std)


def _images(b: int = 8, c: int = 3, s: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, s, s), generator=g, dtype=torch.uint8)


def _denorm(y: torch.Tensor, mean: list[float] = MEAN3, std: list[float] = STD3) -> torch.Tensor:
    return y * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_reproducible_with_seed_and_different_across_seeds() -> None:
    aug = _aug(FULL)
    x = _images(s=20)
    a, b, c = aug(x, _gen(1)), aug(x, _gen(1)), aug(x, _gen(2))
    assert a.shape == (8, 3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_batch_equals_per_sample_with_same_params() -> None:
    """No cross-sample mixing: the batched result is the per-sample result, sample by sample."""
    aug = _aug(FULL)
    x = _images(b=6, s=24)
    params = aug.sample_params(x.shape, "cpu", _gen(3))
    batched = aug.apply_params(x, params)
    singles = [
        aug.apply_params(x[i : i + 1], [{k: v[i : i + 1] for k, v in p.items()} for p in params])
        for i in range(6)
    ]
    torch.testing.assert_close(batched, torch.cat(singles), atol=1e-5, rtol=1e-5)


def test_parameters_differ_within_one_batch() -> None:
    aug = _aug(FULL)
    x = _images(b=1).expand(16, -1, -1, -1)  # 16 copies of one image
    params = aug.sample_params(x.shape, "cpu", _gen(0))
    boxes = params[0]["box"]
    assert boxes.unique(dim=0).shape[0] == 16
    out = aug.apply_params(x, params)
    assert len({out[i].sum().item() for i in range(16)}) == 16


def test_p_zero_is_the_eval_transform() -> None:
    spec = [{**op, "p": 0.0} for op in FULL]
    x = _images(s=12)
    out = _aug(spec, size=8)(x, _gen(0))
    ref = eval_transform(size=8, mean=MEAN3, std=STD3)(x)
    assert torch.equal(out, ref)
    assert len(_aug(spec).ops) == 1  # only the (identity) warp is left


def test_eval_transform_formula_and_single_image() -> None:
    x = _images(b=2, s=8)
    t = eval_transform(size=8, mean=MEAN3, std=STD3)
    expected = (x.float() / 255 - torch.tensor(MEAN3).view(1, 3, 1, 1)) / torch.tensor(STD3).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(t(x), expected)
    torch.testing.assert_close(t(x[0]), expected[0])
    assert eval_transform(size=4, mean=MEAN3, std=STD3)(x).shape == (2, 3, 4, 4)


def test_horizontal_flip_matches_torch_flip() -> None:
    x = _images()
    out = _denorm(_aug([{"op": "horizontal_flip", "p": 1.0}])(x))
    torch.testing.assert_close(out, torch.flip(x.float() / 255, dims=[-1]))
    aug = _aug([{"op": "horizontal_flip", "p": 0.5}])
    params = aug.sample_params(x.shape, "cpu", _gen(5))
    flip = params[0]["flip"]
    assert 0 < int(flip.sum()) < 8
    out = _denorm(aug.apply_params(x, params))
    ref = torch.where(flip.view(-1, 1, 1, 1), torch.flip(x, dims=[-1]), x).float() / 255
    torch.testing.assert_close(out, ref)


def test_full_crop_is_identity_resize() -> None:
    spec = [{"op": "random_resized_crop", "scale": [1.0, 1.0], "ratio": [1.0, 1.0]}]
    for in_size, out_size in ((16, 16), (8, 16)):
        x = _images(s=in_size)
        out = _aug(spec, size=out_size)(x, _gen(0))
        ref = eval_transform(size=out_size, mean=MEAN3, std=STD3)(x)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # 2× shrink: supersampled warp = 2×2 average of the input pixels
    x = _images(s=32)
    out = _denorm(_aug(spec, size=16)(x, _gen(0)))
    torch.testing.assert_close(out, F.avg_pool2d(x.float() / 255, 2), atol=1e-5, rtol=1e-5)


def test_crop_boxes_follow_scale_and_ratio() -> None:
    aug = _aug([{"op": "random_resized_crop", "scale": [0.2, 0.9], "ratio": [0.5, 2.0]}])
    box = aug.sample_params((4096, 3, 32, 48), "cpu", _gen(0))[0]["box"]
    cx, cy, fw, fh = box.unbind(1)
    area, ratio = fw * fh, (fw * 48) / (fh * 32)
    assert float(area.min()) >= 0.2 - 1e-6 and float(area.max()) <= 0.9 + 1e-6
    assert float(ratio.min()) >= 0.5 - 1e-5 and float(ratio.max()) <= 2.0 + 1e-5
    assert bool(((cx.abs() + fw) <= 1 + 1e-6).all() and ((cy.abs() + fh) <= 1 + 1e-6).all())
    assert float(area.std()) > 0.1 and float(cx.std()) > 0.1


def test_crop_samples_the_box_on_a_ramp() -> None:
    """A linear ramp is interpolated exactly, so the output pins down the crop window."""
    size, n = 8, 16
    ramp = torch.arange(n, dtype=torch.float32)
    x = torch.stack([ramp.view(1, n).expand(n, n), ramp.view(n, 1).expand(n, n)]).unsqueeze(0)
    x = x.expand(6, 2, n, n) / n  # channel 0: column index, channel 1: row index (scaled)
    aug = build_augmentation(
        [{"op": "random_resized_crop", "scale": [0.25, 0.25], "ratio": [1.0, 1.0]}],
        size=size,
        channels=2,
        mean=[0.0, 0.0],
        std=[1.0, 1.0],
    )
    params = aug.sample_params(x.shape, "cpu", _gen(0))
    out = aug.apply_params(x, params) * n
    cx, cy, fw, fh = params[0]["box"].unbind(1)
    torch.testing.assert_close(fw, torch.full((6,), 0.5))
    j = torch.arange(size, dtype=torch.float32)
    for axis, c, f in ((0, cx, fw), (1, cy, fh)):
        left = (c - f + 1) / 2 * n  # crop start in pixels
        expected = left.view(-1, 1) + (j + 0.5) * (f * n / size).view(-1, 1) - 0.5
        got = out[:, 0, 0, :] if axis == 0 else out[:, 1, :, 0]
        # (edge outputs may touch the border clamp of the 2× supersampling: compare the inside)
        torch.testing.assert_close(got[:, 1:-1], expected[:, 1:-1], atol=1e-4, rtol=1e-4)


def test_rotation_matches_torchvision_direction() -> None:
    x = torch.rand(3, 1, 16, 16, generator=_gen(0))
    aug = build_augmentation(
        [{"op": "rotation", "degrees": [30, 30]}], size=16, channels=1, mean=[0.0], std=[1.0]
    )
    out = aug(x)
    ref = TF.rotate(x, 30.0, interpolation=InterpolationMode.BILINEAR)
    torch.testing.assert_close(out[..., 4:12, 4:12], ref[..., 4:12, 4:12], atol=1e-5, rtol=1e-5)
    assert float(out[..., 0, 0].abs().max()) == 0.0  # corners come from outside: filled with 0


def test_brightness_formula_and_range() -> None:
    x = torch.rand(64, 3, 8, 8, generator=_gen(0))
    aug = build_augmentation(
        [{"op": "color_jitter", "brightness": 0.4}],
        size=8,
        channels=3,
        mean=[0.0] * 3,
        std=[1.0] * 3,
    )
    params = aug.sample_params(x.shape, "cpu", _gen(1))
    b = params[1]["brightness"]
    assert float(b.min()) >= 0.6 and float(b.max()) <= 1.4 and float(b.std()) > 0.1
    torch.testing.assert_close(aug.apply_params(x, params), (x * b.view(-1, 1, 1, 1)).clamp(0, 1))


@pytest.mark.parametrize(
    ("ours", "theirs", "factors"),
    [
        (adjust_contrast, TF.adjust_contrast, [0.0, 0.6, 1.0, 1.4]),
        (adjust_saturation, TF.adjust_saturation, [0.0, 0.6, 1.0, 1.4]),
        (adjust_hue, TF.adjust_hue, [-0.5, -0.1, 0.25, 0.5]),
        (adjust_brightness, TF.adjust_brightness, [0.0, 0.6, 1.0, 1.4]),
    ],
)
def test_colour_ops_match_torchvision_per_sample(
    ours: Any, theirs: Any, factors: list[float]
) -> None:
    x = torch.rand(4, 3, 8, 8, generator=_gen(0))
    x[0, :, :2] = 0.3  # gray pixels (zero saturation) and channel ties
    x[1, 1] = x[1, 0]
    out = ours(x, torch.tensor(factors))
    ref = torch.stack([theirs(x[i], f) for i, f in enumerate(factors)])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_contrast_on_grayscale_matches_torchvision() -> None:
    x = torch.rand(3, 1, 8, 8, generator=_gen(0))
    f = [0.5, 1.0, 1.5]
    ref = torch.stack([TF.adjust_contrast(x[i], v) for i, v in enumerate(f)])
    torch.testing.assert_close(adjust_contrast(x, torch.tensor(f)), ref, atol=1e-6, rtol=1e-6)


def test_random_order_jitter_equals_manual_composition() -> None:
    spec = [
        {
            "op": "color_jitter",
            "brightness": 0.5,
            "contrast": 0.5,
            "saturation": 0.5,
            "hue": 0.2,
            "random_order": True,
        }
    ]
    aug = build_augmentation(spec, size=8, channels=3, mean=[0.0] * 3, std=[1.0] * 3)
    x = torch.rand(8, 3, 8, 8, generator=_gen(0))
    params = aug.sample_params(x.shape, "cpu", _gen(2))
    p = params[1]
    fns = [
        (adjust_brightness, "brightness"),
        (adjust_contrast, "contrast"),
        (adjust_saturation, "saturation"),
        (adjust_hue, "hue"),
    ]
    expected = []
    for i in range(8):
        y = x[i : i + 1]
        for step in p["order"][i].tolist():
            fn, key = fns[step]
            y = fn(y, p[key][i : i + 1])
        expected.append(y)
    assert len({tuple(o) for o in p["order"].tolist()}) > 1
    torch.testing.assert_close(
        aug.apply_params(x, params), torch.cat(expected), atol=1e-5, rtol=1e-5
    )


def test_grayscale_gives_equal_channels() -> None:
    x = _images()
    out = _denorm(_aug([{"op": "random_grayscale", "p": 1.0}])(x))
    torch.testing.assert_close(out[:, 0], out[:, 1])
    torch.testing.assert_close(out[:, 1], out[:, 2])
    xf = x.float() / 255
    luma = 0.2989 * xf[:, 0] + 0.587 * xf[:, 1] + 0.114 * xf[:, 2]
    torch.testing.assert_close(out[:, 0], luma, atol=1e-5, rtol=1e-5)
    assert len(_aug([{"op": "random_grayscale", "p": 1.0}], channels=1).ops) == 1  # no-op on gray


def test_solarize_formula() -> None:
    x = _images()
    out = _denorm(_aug([{"op": "solarize", "threshold": 0.5, "p": 1.0}])(x))
    xf = x.float() / 255
    torch.testing.assert_close(out, torch.where(xf >= 0.5, 1 - xf, xf), atol=1e-6, rtol=1e-6)


def test_gaussian_noise_formula() -> None:
    x = torch.rand(4, 1, 8, 8, generator=_gen(0))
    spec = [{"op": "gaussian_noise", "std": [0.1, 0.3], "clip": False}]
    aug = build_augmentation(spec, size=8, channels=1, mean=[0.0], std=[1.0])
    params = aug.sample_params(x.shape, "cpu", _gen(1))
    p = params[1]
    expected = x + p["std"].view(-1, 1, 1, 1) * p["noise"]
    torch.testing.assert_close(aug.apply_params(x, params), expected)
    clipped = build_augmentation(
        [{"op": "gaussian_noise", "std": 0.5}], size=8, channels=1, mean=[0.0], std=[1.0]
    )(x, _gen(1))
    assert float(clipped.min()) >= 0.0 and float(clipped.max()) <= 1.0


def test_gaussian_blur_matches_torchvision() -> None:
    x = torch.rand(4, 3, 12, 12, generator=_gen(0))
    aug = build_augmentation(
        [{"op": "gaussian_blur", "sigma": [0.3, 2.0], "kernel_size": 5}],
        size=12,
        channels=3,
        mean=[0.0] * 3,
        std=[1.0] * 3,
    )
    params = aug.sample_params(x.shape, "cpu", _gen(1))
    sigma = params[1]["sigma"].tolist()
    ref = torch.stack([TF.gaussian_blur(x[i], [5, 5], [s, s]) for i, s in enumerate(sigma)])
    torch.testing.assert_close(aug.apply_params(x, params), ref, atol=1e-5, rtol=1e-5)


def test_uint8_and_float_inputs_agree_and_meta_device() -> None:
    aug = _aug(FULL)
    x = _images()
    torch.testing.assert_close(aug(x, _gen(4)), aug(x.float() / 255, _gen(4)))
    meta = aug(torch.empty(4, 3, 20, 20, dtype=torch.uint8, device="meta"))
    assert meta.shape == (4, 3, 16, 16) and meta.device.type == "meta"
    assert meta.dtype == torch.float32


@pytest.mark.parametrize(("channels", "size"), [(3, 32), (3, 96), (1, 28), (1, 8)])
def test_default_recipes_build_and_run(channels: int, size: int) -> None:
    spec = default_augmentation(channels, size)
    assert {op["op"] for op in spec} <= set(AUGMENTATIONS)
    mean, std = [0.5] * channels, [0.25] * channels
    aug = build_augmentation(spec, size=size, channels=channels, mean=mean, std=std)
    out = aug(_images(b=4, c=channels, s=size), _gen(0))
    assert out.shape == (4, channels, size, size) and torch.isfinite(out).all()
    has_flip = any(op["op"] == "horizontal_flip" for op in spec)
    assert has_flip == (size >= 16)  # no flips for 8×8 digits


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ([{"op": "random_crop"}], "did you mean 'random_resized_crop'"),
        (
            [{"op": "random_resized_crop", "scal": [0.2, 1]}],
            "unknown parameter 'scal'.*did you mean 'scale'",
        ),
        ([{"op": "horizontal_flip", "p": 1.5}], r"p must be in \[0, 1\]"),
        ([{"op": "random_resized_crop", "scale": [0.5, 0.2]}], "low <= high"),
        ([{"op": "random_resized_crop", "scale": [0.0, 1.0]}], "0 < low"),
        ([{"op": "random_resized_crop", "scale": 0.5}], r"pair \[low, high\]"),
        ([{"op": "color_jitter", "hue": 0.7}], "hue must be in"),
        ([{"op": "color_jitter", "brightness": -1}], "brightness must be >= 0"),
        ([{"op": "gaussian_blur", "kernel_size": 4}], "odd integer"),
        ([{"op": "solarize", "threshold": True}], "must be a number"),
        ([{"op": "normalize"}], "always applied last"),
        ([{"p": 0.5}], "'op' key"),
        ([{"op": "horizontal_flip"}, {"op": "horizontal_flip"}], "given twice"),
    ],
)
def test_bad_recipes_raise_user_errors(spec: list[dict[str, Any]], match: str) -> None:
    with pytest.raises(UserError, match=match):
        _aug(spec)


def test_bad_build_arguments() -> None:
    with pytest.raises(UserError, match="saturation and hue need RGB"):
        _aug([{"op": "color_jitter", "saturation": 0.4}], channels=1)
    with pytest.raises(UserError, match="one value per channel"):
        build_augmentation([], size=8, channels=3, mean=[0.5], std=[0.5])
    with pytest.raises(UserError, match="std must be > 0"):
        build_augmentation([], size=8, channels=1, mean=[0.5], std=[0.0])
    with pytest.raises(UserError, match="expects"):
        _aug([])(_images(c=1))


def test_ops_are_importable_from_augment_and_validate() -> None:
    from contrastkit.data.image import augment, ops

    for name in ("BatchOp", "GeometricWarp", "ColorJitter", "RandomGrayscale", "GaussianBlur",
                 "Solarize", "GaussianNoise", "Params", "normalize", "adjust_hue"):
        assert getattr(augment, name) is getattr(ops, name), name
    assert repr(ops.GaussianBlur((0.1, 2.0), 5, 0.5)) == "GaussianBlur(sigma=(0.1, 2.0), kernel_size=5, p=0.5)"
    with pytest.raises(ValueError, match="odd and positive"):
        ops.GaussianBlur((0.1, 2.0), 4, 1.0)
