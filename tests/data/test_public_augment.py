"""contrastkit.augment, the public face of the batched augmentations: its docstring's example
runs, and the augmentation works on a user's own uint8 / float (N, C, H, W) tensors."""

from __future__ import annotations

import re

import pytest
import torch

import contrastkit.augment as A
import contrastkit.data.image.augment as impl
from contrastkit.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def test_the_module_re_exports_the_implementation() -> None:
    assert A.__all__ == impl.__all__
    assert all(getattr(A, name) is getattr(impl, name) for name in A.__all__)


def test_the_docstring_example_runs() -> None:
    assert A.__doc__ is not None
    blocks = re.findall(r"Example::\n\n((?:    .*\n|\n)+)", A.__doc__)
    assert len(blocks) == 1
    code = "\n".join(line[4:] for line in blocks[0].splitlines())
    scope: dict[str, object] = {}
    exec(compile(code, "contrastkit.augment docstring", "exec"), scope)
    assert isinstance(scope["view1"], torch.Tensor) and scope["view1"].shape == (16, 3, 32, 32)


def test_views_of_a_user_batch_shapes_dtype_seed() -> None:
    aug = A.build_augmentation(A.default_augmentation(channels=3, size=24), size=24, channels=3, mean=MEAN, std=STD)
    images = torch.randint(0, 256, (6, 3, 30, 41), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(5)
    v1, v2 = aug(images, gen), aug(images, gen)
    assert v1.shape == v2.shape == (6, 3, 24, 24) and v1.dtype == v2.dtype == torch.float32
    assert bool(torch.isfinite(v1).all())
    assert not torch.equal(v1, v2)  # two views differ ...
    assert all(not torch.equal(v1[i], v2[i]) for i in range(6))  # ... image by image
    again = torch.Generator().manual_seed(5)
    assert torch.equal(aug(images, again), v1) and torch.equal(aug(images, again), v2)  # same seed, same views
    # float images in [0, 1] are the same images as uint8 / 255
    floats = aug(images.float() / 255, torch.Generator().manual_seed(5))
    torch.testing.assert_close(floats, v1, rtol=1e-5, atol=1e-5)


def test_without_random_ops_it_is_the_normalisation_in_closed_form() -> None:
    aug = A.build_augmentation([], size=20, channels=3, mean=MEAN, std=STD)
    images = torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8)
    want = (images.float() / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    torch.testing.assert_close(aug(images), want)
    torch.testing.assert_close(A.eval_transform(size=20, mean=MEAN, std=STD)(images), want)


def test_a_batch_of_the_wrong_channel_count_is_a_one_line_error() -> None:
    aug = A.build_augmentation([{"op": "horizontal_flip"}], size=8, channels=3, mean=MEAN, std=STD)
    with pytest.raises(UserError, match=r"expects \(B, 3, H, W\) images"):
        aug(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
