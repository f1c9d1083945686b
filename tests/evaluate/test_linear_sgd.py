"""The published linear protocol (eval.linear_protocol=sgd): SGD on a frozen encoder with crop +
flip, on digits: it learns, leaves the encoder (BatchNorm statistics included) as it was, and
records its schedule."""

from __future__ import annotations

import copy

import torch
from torch import nn

from contrastkit.data.image import eval_transform, load_image_dataset
from contrastkit.data.image.augment import build_augmentation
from contrastkit.evaluate.linear_probe import linear_probe_sgd, sgd_epochs


def test_sgd_protocol_learns_on_a_frozen_encoder_and_records_its_schedule(one_thread: None) -> None:
    train = load_image_dataset("digits", split="train")
    test = load_image_dataset("digits", split="test")
    assert train.labels is not None and test.labels is not None
    mean, std = train.mean(), train.std()
    augment = build_augmentation([{"op": "random_resized_crop", "scale": [0.6, 1.0]}, {"op": "horizontal_flip", "p": 0.5}],
                                 size=8, channels=1, mean=mean, std=std)
    torch.manual_seed(0)
    # a frozen random convolution with BatchNorm: its running statistics must not move
    encoder = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Flatten())
    before = copy.deepcopy(encoder.state_dict())
    rng = torch.get_rng_state()
    result = linear_probe_sgd(encoder, train.images, train.labels, test.images, test.labels, num_classes=10,
                              train_transform=augment, eval_transform=eval_transform(size=8, mean=mean, std=std),
                              epochs=5, batch_size=128, lr=0.1, seed=0)
    assert result["accuracy"] > 0.8  # chance: 0.1
    assert result["train_accuracy"] > 0.6 and result["num_samples"] == 360
    assert encoder.training and torch.equal(torch.get_rng_state(), rng)
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, before[key]), key
    schedule = result["schedule"]
    assert result["protocol"] == "sgd" and schedule["epochs"] == 5 and schedule["momentum"] == 0.9
    assert schedule["lr"] == 0.1 * 128 / 256 and schedule["steps"] == 5 * 12  # 1437 images, batches of 128
    assert "cosine" in schedule["lr_schedule"] and schedule["weight_decay"] == 0.0
    assert sgd_epochs(None, "cpu") == 10 and sgd_epochs(None, "cuda") == 100 and sgd_epochs(3, "cuda") == 3
