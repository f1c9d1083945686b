"""Methods of task ``rl``: the encoder an off-policy agent (DQN) learns from pixels with.

- ``curl``: CURL (Srinivas et al. 2020): an auxiliary contrastive loss during RL: two random
  crops of the same stacked frames, the online encoder (shared with the Q-network) on one, a
  momentum (EMA) key encoder on the other, a bilinear similarity q·W·kᵀ, InfoNCE.
- ``atc``: ATC (Stooke et al. 2021): reward-free pre-training of the encoder from collected
  rollouts: anchor o_t and positive o_{t+k} of the same episode, random shifts, a residual
  predictor, a momentum target encoder, bilinear InfoNCE; the agent then trains on the
  frozen (default) or fine-tuned encoder.
- ``pixels``: the same agent and encoder from pixels without a contrastive term (baseline).
- ``state``: an MLP agent on the environment's true state (the upper bound).

The contrastive terms go through the one InfoNCE kernel: logits q·W·kᵀ are
``info_nce(q @ W, k, similarity="dot", temperature=1.0)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from contrastkit.losses.info_nce import info_nce
from contrastkit.methods.registry import MethodOptions, register_method
from contrastkit.options import option

Augment = Callable[[Tensor], Tensor]


def bilinear_info_nce(queries: Tensor, keys: Tensor, w: Tensor) -> Tensor:
    """CURL's loss: cross-entropy of the logits q_i·W·k_jᵀ with key i the positive of query i."""
    return info_nce(queries @ w, keys, similarity="dot", temperature=1.0, chunk_size=None)


def temporal_pairs(episodes: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Every (anchor t, positive t + k) index pair of a rollout whose two steps belong to the
    same episode (``episodes``: the episode id of each step, in time order)."""
    n = episodes.shape[0]
    if k >= n:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    anchors = torch.arange(n - k)
    same = episodes[anchors] == episodes[anchors + k]
    anchors = anchors[same]
    return anchors, anchors + k


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target ← (1 − tau)·target + tau·online, parameter by parameter."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(o.detach(), tau)


# ----------------------------------------------------------------------------- options


@dataclass
class PixelsOptions(MethodOptions):
    """Options of the plain pixels baseline."""

    augment: bool = option(True, "random crops of the frames in the Q-learning update (DrQ-style)")


@dataclass
class StateOptions(MethodOptions):
    """Options of the true-state baseline."""

    noise: float = option(0.0, "std of Gaussian noise added to the observed state (0: exact)", ge=0)


@dataclass
class CURLOptions(PixelsOptions):
    """CURL's options."""

    encoder_tau: float = option(0.05, "EMA rate of the key encoder per update", gt=0, le=1)
    lr: float = option(1e-3, "learning rate of the contrastive update (encoder and W)", gt=0)
    weight: float = option(1.0, "scale of the contrastive loss", gt=0)


@dataclass
class ATCOptions(PixelsOptions):
    """ATC's options."""

    pretrain_steps: int = option(5000, "reward-free environment steps collected (random policy)", ge=2)
    updates: int = option(1000, "contrastive updates of the pre-training", ge=1)
    batch_size: int = option(128, "anchors per pre-training update", ge=2)
    delta_t: int = option(3, "the positive of o_t is o_(t+k), k = delta_t, in the same episode", ge=1)
    target_tau: float = option(0.01, "EMA rate of the target encoder per update", gt=0, le=1)
    lr: float = option(1e-3, "pre-training learning rate", gt=0)
    shift: int = option(1, "random shift of up to ±shift pixels (larger shifts hide the cart's position)", ge=0)
    freeze_encoder: bool = option(True, "RL on the frozen pre-trained encoder (false: fine-tune it)")


# ----------------------------------------------------------------------------- modules


class _DQNOnly(nn.Module):
    """A method without a contrastive term: it holds its options only; the agent
    (Stable-Baselines3's DQN) trains on environment steps, there is no batch of its own."""

    def __init__(self, options: PixelsOptions | StateOptions, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.opts = options


@register_method("pixels", options=PixelsOptions, tasks=("rl",), paper="Mnih et al. 2015 (DQN), arXiv:1312.5602")
class Pixels(_DQNOnly):
    """Pixels: DQN on the conv encoder of stacked frames, no contrastive term (baseline). It holds
    its options only: no batch of its own."""


@register_method("state", options=StateOptions, tasks=("rl",), paper="Mnih et al. 2015 (DQN), arXiv:1312.5602")
class State(_DQNOnly):
    """State: DQN with an MLP on the environment's true state (the upper bound). It holds its
    options only: no batch of its own."""


@register_method("curl", options=CURLOptions, tasks=("rl",), paper="Srinivas et al. 2020, arXiv:2004.04136")
class CURL(nn.Module):
    """CURL: auxiliary bilinear InfoNCE between random crops, momentum key encoder.

    No ``training_step(batch)``: ``update(obs, augment)`` takes a replay batch of stacked
    frames, float in [0, 1], (B, C · frame_stack, H, W), and the augmentation (a callable, e.g.
    :func:`contrastkit.rl.augment.random_crop` with a margin) that makes the query and key
    crops; it takes one step of its own optimiser and returns the loss.
    """

    def __init__(self, options: CURLOptions, encoder: nn.Module) -> None:
        super().__init__()
        self.opts = options
        self.encoder = encoder  # the Q-network's own encoder (trained by both losses)
        self.key_encoder = copy.deepcopy(encoder).requires_grad_(False)
        dim = int(encoder.out_dim)  # type: ignore[arg-type]
        self.w = nn.Parameter(torch.rand(dim, dim))
        self.optimizer = torch.optim.Adam([*encoder.parameters(), self.w], lr=options.lr)

    def loss(self, anchors: Tensor, positives: Tensor) -> Tensor:
        """Bilinear InfoNCE of two augmented views (float, on the encoder's scale)."""
        q = self.encoder(anchors)
        with torch.no_grad():
            k = self.key_encoder(positives)
        return bilinear_info_nce(q, k, self.w)

    def update(self, obs: Tensor, augment: Augment) -> float:
        """One contrastive step on a batch of stacked frames (floats in [0, 1]), then the EMA."""
        loss = self.opts.weight * self.loss(augment(obs), augment(obs))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        ema_update(self.key_encoder, self.encoder, self.opts.encoder_tau)
        return float(loss.detach())


@register_method("atc", options=ATCOptions, tasks=("rl",), paper="Stooke et al. 2021, arXiv:2009.08319")
class ATC(nn.Module):
    """ATC: reward-free encoder pre-training, o_t vs o_(t+k), momentum target, bilinear InfoNCE.

    No ``training_step(batch)``: ``update(anchors, positives)`` takes augmented observations
    o_t and o_(t+k) of the same rollouts, float in [0, 1], each (B, C · frame_stack, H, W) and
    row-aligned; it takes one step of its own optimiser and returns the loss.
    """

    def __init__(self, options: ATCOptions, encoder: nn.Module) -> None:
        super().__init__()
        self.opts = options
        self.encoder = encoder
        self.target = copy.deepcopy(encoder).requires_grad_(False)
        dim = int(encoder.out_dim)  # type: ignore[arg-type]
        self.predictor = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.w = nn.Parameter(torch.rand(dim, dim))
        self.optimizer = torch.optim.Adam([*encoder.parameters(), *self.predictor.parameters(), self.w], lr=options.lr)

    def loss(self, anchors: Tensor, positives: Tensor) -> Tensor:
        z = self.encoder(anchors)
        q = z + self.predictor(z)  # residual predictor
        with torch.no_grad():
            k = self.target(positives)
        return bilinear_info_nce(q, k, self.w)

    def update(self, anchors: Tensor, positives: Tensor) -> float:
        """One step on augmented anchors o_t and positives o_(t+k), then the target's EMA."""
        loss = self.loss(anchors, positives)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        ema_update(self.target, self.encoder, self.opts.target_tau)
        return float(loss.detach())
