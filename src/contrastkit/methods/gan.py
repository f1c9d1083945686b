"""GAN methods of task ``gan``: a DCGAN-size generator and discriminator for 8–64 px images,
trained with the plain non-saturating loss (``dcgan``) or with a contrastive discriminator
(``contrad``: Jeong & Shin 2021, "Training GANs with Stronger Augmentations via Contrastive
Discriminator", arXiv:2103.09742).

ContraD's discriminator step, per batch of N real images and N generated ones:

- ``L_con+``: SimCLR (NT-Xent) between two strongly augmented views of each real image, through
  the projection head ``h_r``;
- ``L_con-``: supervised contrastive loss through a second head ``h_f`` over the 2N real views
  and the N (augmented) fakes, labels real / fake; the anchors are the fakes (each fake's
  positives are the other fakes, its negatives the real views), as in the paper;
- ``L_dis``: the non-saturating GAN loss of a linear head on the **detached** representation
  (the backbone learns from the contrastive terms only).

The generator's loss is the non-saturating loss of that head on its augmented samples (the
gradient flows through the backbone, which the generator step does not update). Both
contrastive terms go through :func:`contrastkit.losses.info_nce`.

The task drives the steps (``d_step``, ``g_step``) and owns the optimisers; a method only
turns a batch into losses and logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from contrastkit.errors import UserError
from contrastkit.losses import info_nce
from contrastkit.methods.registry import MethodOptions, register_method
from contrastkit.options import option

Augment = Any  # a BatchAugmentation: [0, 1] float (B, C, H, W) → normalised views


# ----------------------------------------------------------------------------- networks


def check_size(size: int) -> None:
    if size % 4 or not 8 <= size <= 64:
        raise UserError(
            f"task gan needs square images of a side that is a multiple of 4 from 8 to 64, got {size} "
            "(set data.image_size, e.g. 16 for digits, 32 for CIFAR)"
        )


class Generator(nn.Module):
    """DCGAN generator: z → (4w, s/4, s/4) → two ×2 transposed convolutions → tanh image."""

    def __init__(self, z_dim: int, channels: int, size: int, width: int) -> None:
        super().__init__()
        check_size(size)
        self.z_dim, self.base, self.width = z_dim, size // 4, width
        self.fc = nn.Sequential(nn.Linear(z_dim, 4 * width * self.base**2), nn.BatchNorm1d(4 * width * self.base**2), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, channels, 3, 1, 1), nn.Tanh(),
        )

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z).view(z.shape[0], 4 * self.width, self.base, self.base)
        out: Tensor = self.net(h)
        return out


class DiscriminatorBackbone(nn.Module):
    """SNDCGAN-style discriminator body (no BatchNorm, optional spectral norm) → (B, feature_dim)."""

    def __init__(self, channels: int, size: int, width: int, feature_dim: int, sn: bool = True) -> None:
        super().__init__()
        check_size(size)
        wrap = spectral_norm if sn else (lambda m: m)
        act = nn.LeakyReLU(0.1)
        self.out_dim = feature_dim
        self.net = nn.Sequential(
            wrap(nn.Conv2d(channels, width, 3, 1, 1)), act,
            wrap(nn.Conv2d(width, 2 * width, 4, 2, 1)), act,
            wrap(nn.Conv2d(2 * width, 2 * width, 3, 1, 1)), act,
            wrap(nn.Conv2d(2 * width, 4 * width, 4, 2, 1)), act,
            nn.Flatten(),
            wrap(nn.Linear(4 * width * (size // 4) ** 2, feature_dim)), act,
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out


def to_unit(images: Tensor) -> Tensor:
    """Generator output in [-1, 1] → [0, 1]."""
    return (images + 1) / 2


def to_uint8(images: Tensor) -> Tensor:
    """Generator output in [-1, 1] → uint8 images (as the real data is stored)."""
    return to_unit(images).mul(255).round().clamp(0, 255).to(torch.uint8)


# ----------------------------------------------------------------------------- methods


@dataclass
class DCGANOptions(MethodOptions):
    """Options of the plain GAN."""

    augment: bool = option(
        False, "augment real and generated images with the SimCLR augmentation before D (DiffAugment-style)"
    )


@dataclass
class ContraDOptions(MethodOptions):
    """Options of ContraD."""

    temperature: float = option(0.1, "temperature of both contrastive terms", gt=0)
    lambda_con: float = option(1.0, "weight of the real-vs-fake supervised contrastive term L_con-", ge=0)
    lambda_dis: float = option(1.0, "weight of the discriminator head's GAN loss L_dis", gt=0)
    projection_dim: int = option(64, "output width of the projection heads h_r, h_f", ge=1)


class GANMethod(nn.Module):
    """Shared parts: generator, discriminator backbone, a linear real/fake head.

    No ``training_step(batch)``: a GAN step is two updates. ``d_step(real, generator)`` takes
    real images (B, C, H, W), uint8 (0–255) or float in [0, 1], on the model's device, and a
    ``torch.Generator`` (noise and augmentations) and returns the discriminator's loss and
    logs; ``g_step(n, generator, device)`` the generator's loss on n fakes and logs.
    """

    def __init__(self, *, channels: int, size: int, z_dim: int, g_width: int, d_width: int,
                 feature_dim: int, spectral_norm: bool, augmentation: Augment) -> None:
        super().__init__()
        self.generator = Generator(z_dim, channels, size, g_width)
        self.backbone = DiscriminatorBackbone(channels, size, d_width, feature_dim, spectral_norm)
        self.head = nn.Linear(feature_dim, 1)
        self.augmentation = augmentation
        self.z_dim = z_dim

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("generator.")]

    def noise(self, n: int, gen: torch.Generator, device: torch.device) -> Tensor:
        return torch.randn(n, self.z_dim, generator=gen, device=gen.device).to(device)

    def view(self, x01: Tensor, gen: torch.Generator) -> Tensor:
        """An augmented, normalised view of [0, 1] images (differentiable in the images)."""
        return self.augmentation.apply_params(x01, self.augmentation.sample_params(x01.shape, x01.device, gen))

    @staticmethod
    def plain(x01: Tensor) -> Tensor:
        """[0, 1] → [-1, 1], the discriminator's input without augmentation."""
        return x01 * 2 - 1

    def generate(self, n: int, gen: torch.Generator, device: torch.device) -> Tensor:
        return self.generator(self.noise(n, gen, device))

    def d_step(self, real: Tensor, gen: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def g_step(self, n: int, gen: torch.Generator, device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError


def _real01(real: Tensor) -> Tensor:
    return real.float().div(255) if real.dtype == torch.uint8 else real


@register_method("dcgan", options=DCGANOptions, tasks=("gan",), paper="Radford et al. 2016, arXiv:1511.06434")
class DCGAN(GANMethod):
    """DCGAN: the non-saturating GAN loss on a DCGAN-size generator / SN discriminator (baseline).

    Steps: ``d_step(real, generator)`` on real images (B, C, H, W), uint8 or float in [0, 1],
    and ``g_step(n, generator, device)``, as :class:`GANMethod` describes (no ``training_step``).
    """

    def __init__(self, options: DCGANOptions, **parts: Any) -> None:
        super().__init__(**parts)
        self.opts = options

    def _d_input(self, x01: Tensor, gen: torch.Generator) -> Tensor:
        return self.view(x01, gen) if self.opts.augment else self.plain(x01)

    def d_step(self, real: Tensor, gen: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad():
            fake = to_unit(self.generate(real.shape[0], gen, real.device))
        out_real = self.head(self.backbone(self._d_input(_real01(real), gen)))
        out_fake = self.head(self.backbone(self._d_input(fake, gen)))
        loss = F.softplus(-out_real).mean() + F.softplus(out_fake).mean()
        return loss, {"d_loss": loss.detach(), "d_real": torch.sigmoid(out_real.detach()).mean(),
                      "d_fake": torch.sigmoid(out_fake.detach()).mean()}

    def g_step(self, n: int, gen: torch.Generator, device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
        out = self.head(self.backbone(self._d_input(to_unit(self.generate(n, gen, device)), gen)))
        loss = F.softplus(-out).mean()
        return loss, {"g_loss": loss.detach()}


def _mlp(dim: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(0.1), nn.Linear(dim, out))


def simclr_term(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """L_con+: NT-Xent between two views (rows i of z1 and z2 are positives)."""
    n = z1.shape[0]
    idx = torch.arange(2 * n, device=z1.device)
    return info_nce(torch.cat([z1, z2]), positive_index=(idx + n) % (2 * n), temperature=temperature, check_values=False)


def real_fake_supcon_term(real_views: Tensor, fake: Tensor, temperature: float) -> Tensor:
    """L_con-: SupCon over the real views (label 0) and the fakes (label 1), averaged over the
    fake anchors (positives: the other fakes; the denominator: every other row)."""
    rows = torch.cat([real_views, fake])
    labels = torch.cat([real_views.new_zeros(real_views.shape[0], dtype=torch.long),
                        fake.new_ones(fake.shape[0], dtype=torch.long)])
    per_row = info_nce(rows, labels=labels, temperature=temperature, reduction="none", check_values=False)
    return per_row[real_views.shape[0]:].mean()


@register_method("contrad", options=ContraDOptions, tasks=("gan",), paper="Jeong & Shin 2021, arXiv:2103.09742")
class ContraD(GANMethod):
    """ContraD: the discriminator learns SimCLR + real-vs-fake SupCon; a linear head on detached features scores.

    Steps: ``d_step(real, generator)`` on real images (B, C, H, W), uint8 or float in [0, 1],
    and ``g_step(n, generator, device)``, as :class:`GANMethod` describes (no ``training_step``).
    """

    def __init__(self, options: ContraDOptions, **parts: Any) -> None:
        super().__init__(**parts)
        self.opts = options
        dim = self.backbone.out_dim
        self.proj_real = _mlp(dim, options.projection_dim)
        self.proj_fake = _mlp(dim, options.projection_dim)

    def d_step(self, real: Tensor, gen: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        n, t = real.shape[0], self.opts.temperature
        with torch.no_grad():
            fake = to_unit(self.generate(n, gen, real.device))
        x = _real01(real)
        h = self.backbone(torch.cat([self.view(x, gen), self.view(x, gen), self.view(fake, gen)]))
        h_real, h_fake = h[: 2 * n], h[2 * n :]
        zr = self.proj_real(h_real)
        con_real = simclr_term(zr[:n], zr[n:], t)
        con_fake = real_fake_supcon_term(self.proj_fake(h_real), self.proj_fake(h_fake), t)
        out_real, out_fake = self.head(h_real[:n].detach()), self.head(h_fake.detach())
        dis = F.softplus(-out_real).mean() + F.softplus(out_fake).mean()
        loss = con_real + self.opts.lambda_con * con_fake + self.opts.lambda_dis * dis
        return loss, {"d_loss": loss.detach(), "con_real": con_real.detach(), "con_fake": con_fake.detach(),
                      "dis": dis.detach(), "d_real": torch.sigmoid(out_real.detach()).mean(),
                      "d_fake": torch.sigmoid(out_fake.detach()).mean()}

    def g_step(self, n: int, gen: torch.Generator, device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
        out = self.head(self.backbone(self.view(to_unit(self.generate(n, gen, device)), gen)))
        loss = F.softplus(-out).mean()
        return loss, {"g_loss": loss.detach()}
