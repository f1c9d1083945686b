"""The agent of task ``rl``: Stable-Baselines3's DQN with a contrastkit conv encoder as its
features extractor, CURL's contrastive update inside DQN's ``train()``, checkpoints that hold
the agent, its optimiser(s) and the replay buffer, evaluation episodes and the state probe."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor, nn

from contrastkit.rl.augment import center_crop, random_crop

CARTPOLE_STATE = ("cart_position", "cart_velocity", "pole_angle", "pole_angular_velocity")
BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


class PixelEncoder(nn.Module):
    """Stacked frames (floats in [0, 1]) → features: three 3×3 convolutions (strides 2, 2, 1),
    a linear layer, LayerNorm and tanh (the CURL / SAC-AE encoder, smaller)."""

    def __init__(self, channels: int, height: int, width: int, features_dim: int = 50, filters: int = 32) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(channels, filters, 3, stride=2), nn.ReLU(),
            nn.Conv2d(filters, filters, 3, stride=2), nn.ReLU(),
            nn.Conv2d(filters, filters, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = int(self.convs(torch.zeros(1, channels, height, width)).shape[1])
        self.fc = nn.Linear(flat, features_dim)
        self.norm = nn.LayerNorm(features_dim)
        self.out_dim = features_dim

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = torch.tanh(self.norm(self.fc(self.convs(x))))
        return out


class PixelExtractor(BaseFeaturesExtractor):
    """SB3 features extractor around :class:`PixelEncoder`: a random crop of the frames while
    training (``augment``), the central crop when acting."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 50, margin: int = 4,
                 augment: bool = True) -> None:
        super().__init__(observation_space, features_dim)
        c, h, w = observation_space.shape
        self.margin, self.augment = margin, augment
        self.encoder = PixelEncoder(c, h - 2 * margin, w - 2 * margin, features_dim)

    def forward(self, observations: Tensor) -> Tensor:
        if self.training and self.augment:
            x = random_crop(observations, self.margin)
        else:
            x = center_crop(observations, self.margin)
        out: Tensor = self.encoder(x)
        return out


class ContrastiveDQN(DQN):
    """DQN whose ``train()`` interleaves an auxiliary contrastive update (CURL) with each
    Q-learning gradient step, on its own replay batch, as CURL does with SAC."""

    aux: Any = None  # the CURL module (update(obs, augment) → loss), or None
    augment: Callable[[Tensor], Tensor] | None = None
    loss_log: list[list[float]]  # [env step, TD loss, contrastive loss] per train() call

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        if not hasattr(self, "loss_log"):
            self.loss_log = []
        td, cl = [], []
        for _ in range(gradient_steps):
            super().train(1, batch_size)
            td.append(float(self.logger.name_to_value.get("train/loss", float("nan"))))
            if self.aux is not None and self.augment is not None:
                assert self.replay_buffer is not None
                data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
                cl.append(self.aux.update(data.observations.float() / 255.0, self.augment))
        if cl:
            self.logger.record("train/contrastive_loss", float(np.mean(cl)))
        self.loss_log.append([float(self.num_timesteps), float(np.mean(td)), float(np.mean(cl)) if cl else float("nan")])


# ----------------------------------------------------------------------------- checkpoints


def agent_state(model: ContrastiveDQN, *, buffer: bool) -> dict[str, Any]:
    """Everything to continue training: policy, optimiser(s), counters, losses and (``buffer``)
    the filled part of the replay buffer, as tensors (loadable with weights_only=True)."""
    state: dict[str, Any] = {
        "policy": model.policy.state_dict(),
        "optimizer": model.policy.optimizer.state_dict(),
        "num_timesteps": int(model.num_timesteps),
        "n_updates": int(model._n_updates),
        "n_calls": int(model._n_calls),
        "episode_num": int(model._episode_num),
        "loss_log": list(getattr(model, "loss_log", [])),
        "torch_rng": torch.get_rng_state(),
    }
    if model.aux is not None:
        state["aux"] = model.aux.state_dict()
        state["aux_optimizer"] = model.aux.optimizer.state_dict()
    rb = model.replay_buffer
    if buffer and rb is not None:
        n = rb.buffer_size if rb.full else min(rb.pos + 1, rb.buffer_size)
        arrays = {name: torch.from_numpy(np.ascontiguousarray(getattr(rb, name)[:n])) for name in BUFFER_ARRAYS
                  if isinstance(getattr(rb, name, None), np.ndarray)}
        state["buffer"] = {"arrays": arrays, "pos": int(rb.pos), "full": bool(rb.full)}
    return state


def load_agent_state(model: ContrastiveDQN, state: dict[str, Any]) -> bool:
    """Restore :func:`agent_state` into a freshly built ``model``; True if the replay buffer
    was restored too."""
    model.policy.load_state_dict(state["policy"])
    model.policy.optimizer.load_state_dict(state["optimizer"])
    model.num_timesteps = int(state["num_timesteps"])
    model._n_updates = int(state["n_updates"])
    model._n_calls = int(state["n_calls"])
    model._episode_num = int(state["episode_num"])
    model.loss_log = [list(row) for row in state.get("loss_log", [])]
    torch.set_rng_state(state["torch_rng"])
    if model.aux is not None and "aux" in state:
        model.aux.load_state_dict(state["aux"])
        model.aux.optimizer.load_state_dict(state["aux_optimizer"])
    rb, saved = model.replay_buffer, state.get("buffer")
    if rb is None or not saved:
        return False
    for name, tensor in saved["arrays"].items():
        getattr(rb, name)[: tensor.shape[0]] = tensor.numpy()
    rb.pos, rb.full = int(saved["pos"]), bool(saved["full"])
    return True


# ----------------------------------------------------------------------------- evaluation


def episode_returns(model: DQN, env: gym.Env, episodes: int, seed: int) -> list[float]:
    """Returns of ``episodes`` greedy episodes, episode i started with seed ``seed + i``."""
    out = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(int(action))
            total += float(reward)
            done = terminated or truncated
        out.append(total)
    return out


@dataclass
class AgentOutput:
    """An agent step's TD loss (None until learning starts), and its logs."""

    loss: Tensor | None
    logs: dict[str, Any]
    diagnostics: Callable[[], dict[str, float]] | None = None


class AgentStep:
    """One environment step of the agent (its epsilon-greedy action, the transition into the
    replay buffer) and, every ``train_freq`` steps past ``learning_starts``, its gradient steps
    (with CURL's update): what Stable-Baselines3's ``learn`` does, one step at a time, so that the
    one training loop owns the budget, signals, logs and checkpoints. ``extra``: what the task
    keeps with the agent's state (ATC's pre-training)."""

    def __init__(self, model: ContrastiveDQN, total_steps: int, *, buffer: bool, extra: dict[str, Any]) -> None:
        self.model, self.total_steps, self.buffer, self.extra = model, total_steps, buffer, extra
        self.train_freq = int(cast(Any, model.train_freq).frequency)
        self._callback: BaseCallback | None = None
        self._td: Tensor | None = None

    def __call__(self, batch: Any, clock: Any) -> AgentOutput:
        from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit

        model = self.model
        if self._callback is None:  # after a resume, from the restored counters
            _, self._callback = model._setup_learn(self.total_steps - int(model.num_timesteps), None, False)
        assert model.replay_buffer is not None and model.env is not None
        model.collect_rollouts(model.env, callback=self._callback, train_freq=TrainFreq(1, TrainFrequencyUnit.STEP),
                               replay_buffer=model.replay_buffer, action_noise=model.action_noise,
                               learning_starts=model.learning_starts, log_interval=4)
        steps = int(model.num_timesteps)
        logs: dict[str, Any] = {"epsilon": float(model.exploration_rate), "episodes": float(model._episode_num)}
        if steps > model.learning_starts and steps % self.train_freq == 0:
            gradient_steps = model.gradient_steps if model.gradient_steps >= 0 else self.train_freq
            if gradient_steps > 0:
                model.train(batch_size=model.batch_size, gradient_steps=gradient_steps)
                _, td, contrastive = model.loss_log[-1]
                self._td = torch.tensor(td)
                if np.isfinite(contrastive):
                    logs["contrastive"] = contrastive
        if model.ep_info_buffer:
            logs["return"] = float(np.mean([info["r"] for info in model.ep_info_buffer]))
        return AgentOutput(self._td, logs)

    def state_dict(self) -> dict[str, Any]:
        return {**agent_state(self.model, buffer=self.buffer), "extra": self.extra}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.extra.update(state.get("extra") or {})
        self.restored = load_agent_state(self.model, state)


class EnvSteps:
    """The loop's "batches" of an agent: one per environment step (they carry nothing: the
    agent draws its experience itself); the whole run is one epoch."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.batch_size = 1

    def __len__(self) -> int:
        return self.total

    def batches(self, epoch: int, start: int = 0) -> Iterator[None]:
        for _ in range(start, self.total):
            yield None

    def units(self, batch: Any) -> int:
        return 1

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing: the environment's state is the agent's."""


@torch.no_grad()
def encode(encoder: nn.Module, obs: np.ndarray, margin: int, device: torch.device, batch: int = 256) -> np.ndarray:
    """Features of stacked frames (N, K, H, W) uint8 (central crop, as when acting)."""
    encoder.eval()
    out = []
    for i in range(0, obs.shape[0], batch):
        x = torch.from_numpy(obs[i : i + batch]).to(device).float() / 255.0
        out.append(encoder(center_crop(x, margin)).float().cpu())
    return torch.cat(out).numpy()


def state_probe(features: np.ndarray, states: np.ndarray, episodes: np.ndarray, names: list[str],
                alpha: float = 1.0) -> dict[str, float]:
    """R² per state variable of a ridge regression from features, fitted on the first 70 % of
    the episodes and scored on the rest (held-out frames)."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.preprocessing import StandardScaler

    cut = episodes.min() + 0.7 * (episodes.max() - episodes.min() + 1)
    train, test = episodes < cut, episodes >= cut
    if train.sum() < 2 or test.sum() < 2:
        train = np.arange(len(episodes)) < int(0.7 * len(episodes))
        test = ~train
    scaler = StandardScaler().fit(features[train])
    ridge = Ridge(alpha=alpha).fit(scaler.transform(features[train]), states[train])
    r2 = r2_score(states[test], ridge.predict(scaler.transform(features[test])), multioutput="raw_values")
    return {name: float(v) for name, v in zip(names, np.atleast_1d(r2), strict=True)}


def state_names(env_id: str, dim: int) -> list[str]:
    return list(CARTPOLE_STATE) if env_id.startswith("CartPole") and dim == 4 else [f"state_{i}" for i in range(dim)]
