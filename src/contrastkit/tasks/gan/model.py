"""The GAN of a ``gan`` run: its config section, the networks it builds, sample grids."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from contrastkit.config import Config, EvalConfig
from contrastkit.methods.gan import GANMethod, to_unit
from contrastkit.methods.registry import get_method
from contrastkit.options import option

GENERATOR_FILE = "generator.safetensors"
# train_log.csv names of the methods' logs: columns sharing a name before '@' share a panel of
# the report; "loss" is the discriminator's (the column every task logs)
LOG_NAMES = {"d_loss": "loss", "g_loss": "loss@generator", "con_real": "contrastive@real",
             "con_fake": "contrastive@fake", "dis": "head_loss", "d_real": "D(x)@real", "d_fake": "D(x)@fake"}


@dataclass
class GanConfig:
    """Networks, optimiser, samples and evaluation of task gan."""

    z_dim: int = option(64, "latent (noise) dimensions", ge=1)
    g_width: int = option(32, "generator base width (channels of its last block)", ge=1)
    d_width: int = option(32, "discriminator base width (channels of its first block)", ge=1)
    feature_dim: int = option(256, "width of the discriminator's representation", ge=1)
    spectral_norm: bool = option(True, "spectral normalisation of the discriminator's layers")
    lr_g: float = option(2e-4, "Adam learning rate of the generator", gt=0)
    lr_d: float = option(2e-4, "Adam learning rate of the discriminator", gt=0)
    beta1: float = option(0.5, "Adam beta1 (both networks)", ge=0, lt=1)
    beta2: float = option(0.999, "Adam beta2 (both networks)", ge=0, lt=1)
    sample_every: int = option(500, "steps between sample grids in plots/ (0: only the final grid)", ge=0)
    grid_samples: int = option(64, "images in a sample grid", ge=1)
    eval_samples: int = option(2000, "generated and held-out real images compared by the metrics", ge=10)
    pr_k: int = option(3, "neighbours defining the manifolds of precision / recall", ge=1)
    probe_samples: int = option(5000, "labelled training images of the discriminator's linear probe", ge=10)
    feature_run: str | None = option(
        None, "run folder of a task-image encoder trained on this data: the metrics' feature space "
        "(default: a small SimCLR encoder trained once on the real data and cached)"
    )
    feature_steps: int = option(500, "training steps of the default cached SimCLR feature encoder", ge=1)
    feature_width: int = option(32, "width of the default cached SimCLR feature encoder", ge=1)


@dataclass
class GanEvalConfig(EvalConfig):
    """Evaluation after training, and the validation of task gan: the Fréchet distance of generated
    images to real images held out of the training split."""

    val_size: int = option(
        0, "validation: real images held out of the training split (never trained on); the Fréchet distance of as "
        "many generated images to them is measured after the last step (0: no validation; else at least 10)", ge=0,
    )
    val_seed: int = option(0, "seed of the validation split's draw (independent of train.seed)", ge=0)
    val_every: int = option(0, "validation every N steps of training too (0: after the last step only)", ge=0)


def build_gan(cfg: Config, channels: int, size: int, device: torch.device) -> GANMethod:
    """The configured method's generator / discriminator (weights seeded with train.seed)."""
    from contrastkit.data.image import build_augmentation, default_augmentation

    g = cfg.gan
    spec = cfg.data.augment if cfg.data.augment is not None else default_augmentation(channels, size)
    aug = build_augmentation(spec, size=size, channels=channels, mean=[0.5] * channels, std=[0.5] * channels)
    torch.manual_seed(cfg.train.seed)
    model = get_method(cfg.method.name, "gan").build(
        cfg.method, channels=channels, size=size, z_dim=g.z_dim, g_width=g.g_width, d_width=g.d_width,
        feature_dim=g.feature_dim, spectral_norm=g.spectral_norm, augmentation=aug,
    )
    assert isinstance(model, GANMethod)
    return model.to(device)


def save_grid(images: Tensor, path: Path) -> None:
    """Generator output in [-1, 1] → a PNG grid."""
    from torchvision.utils import save_image

    path.parent.mkdir(parents=True, exist_ok=True)
    n = images.shape[0]
    save_image(to_unit(images.detach().float().cpu()).clamp(0, 1), str(path), nrow=max(1, int(n**0.5)), padding=1)
