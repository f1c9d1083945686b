"""Batched, on-device image augmentation for your own tensors: the augmentations contrastkit's
image methods train with, applied to a whole (N, C, H, W) batch at once on its device (CPU or
GPU), each image with its own random parameters.

Input: uint8 images (0–255) or float images in [0, 1], (N, C, H, W), any H and W. Output: float32
(N, C, size, size), normalised with ``mean`` / ``std``. Build one from a recipe — the list of ops
of a recipe's ``data.augment`` (:data:`AUGMENTATIONS` names them: ``random_resized_crop``,
``horizontal_flip``, ``rotation``, ``color_jitter``, ``random_grayscale``, ``gaussian_blur``,
``solarize``, ``gaussian_noise``) — with :func:`build_augmentation`; :func:`default_augmentation`
is SimCLR's recipe for a channel count and size. Calling it twice on the same batch gives two
views; pass a ``torch.Generator`` for reproducible views (the same seed gives the same views).
:func:`eval_transform` is the deterministic resize-and-normalise of evaluation.

Example::

    import torch
    import contrastkit.augment as A

    augment = A.build_augmentation(
        A.default_augmentation(channels=3, size=32),  # or e.g. [{"op": "horizontal_flip", "p": 0.5}]
        size=32, channels=3, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
    )
    images = torch.randint(0, 256, (16, 3, 40, 48), dtype=torch.uint8)  # your batch (a GPU tensor works too)
    gen = torch.Generator().manual_seed(0)
    view1, view2 = augment(images, gen), augment(images, gen)  # two views, each (16, 3, 32, 32) float32
    assert view1.shape == (16, 3, 32, 32) and not torch.equal(view1, view2)

The ops themselves (:class:`ColorJitter`, :class:`GaussianBlur`, … with ``sample`` / ``apply``)
and their functional forms (``adjust_brightness``, …) are re-exported for finer use. The code
lives in :mod:`contrastkit.data.image.augment` and :mod:`contrastkit.data.image.ops`; this module
is where to import it from.
"""

from __future__ import annotations

from contrastkit.data.image.augment import *  # noqa: F403  (the public names: that module's __all__)
from contrastkit.data.image.augment import __all__ as __all__
