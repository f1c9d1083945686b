"""Environments for task ``rl``: Gymnasium classic control rendered headless (pygame with
``SDL_VIDEODRIVER=dummy``) or ALE Atari games, as stacked greyscale uint8 frames (K, H, W).
The true low-dimensional state stays in ``info["state"]`` (for the linear probe)."""

from __future__ import annotations

import os
from collections import deque
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from contrastkit.errors import UserError, closest, install_hint

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # before pygame is imported by gymnasium
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import gymnasium as gym

# rows of a rendered frame that show the cart and its pole (CartPole's frame is 400 × 600)
CARTPOLE_BAND = (0.375, 0.825)


def grey_resize(
    frame: np.ndarray, height: int, width: int, band: tuple[float, float] | None, *, invert: bool = False
) -> np.ndarray:
    """An RGB (or grey) frame → greyscale uint8 (height, width): the rows of ``band`` (fractions
    of the frame's height) kept, then area-averaged down; ``invert``: 255 − grey (objects bright
    on a black background, so that the empty background gives the encoder nothing)."""
    img = frame.astype(np.float32)
    if img.ndim == 3:
        img = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if band is not None:
        h = img.shape[0]
        img = img[int(band[0] * h) : int(band[1] * h)]
    t = torch.from_numpy(np.ascontiguousarray(img))[None, None]
    out = F.adaptive_avg_pool2d(t, (height, width))[0, 0]
    if invert:
        out = 255.0 - out
    return out.round().clamp(0, 255).to(torch.uint8).numpy()


class PixelFrames(gym.Wrapper):
    """Observations → the last ``stack`` greyscale frames (stack, height, width), uint8 (rendered
    classic-control frames inverted: dark objects on white become bright on black); the wrapped
    environment's own observation (the true state) goes to ``info["state"]``."""

    def __init__(self, env: gym.Env, height: int, width: int, stack: int, *, render: bool) -> None:
        super().__init__(env)
        self.height, self.width, self.stack, self.render_frames = height, width, stack, render
        spec_id = env.spec.id if env.spec is not None else ""
        self.band = CARTPOLE_BAND if spec_id.startswith("CartPole") else None
        self.frames: deque[np.ndarray] = deque(maxlen=stack)
        self.observation_space = gym.spaces.Box(0, 255, (stack, height, width), dtype=np.uint8)

    def _frame(self, obs: Any) -> np.ndarray:
        raw = self.env.render() if self.render_frames else obs
        return grey_resize(np.asarray(raw), self.height, self.width, self.band, invert=self.render_frames)

    def _observation(self) -> np.ndarray:
        return np.stack(list(self.frames), axis=0)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        frame = self._frame(obs)
        for _ in range(self.stack):
            self.frames.append(frame)
        info["state"] = np.asarray(obs, dtype=np.float32) if self.render_frames else None
        return self._observation(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.frames.append(self._frame(obs))
        info["state"] = np.asarray(obs, dtype=np.float32) if self.render_frames else None
        return self._observation(), float(reward), terminated, truncated, info


def check_env_id(env_id: str) -> None:
    """A one-line error for an environment id Gymnasium (or ale-py, for ALE/ games) lacks."""
    if env_id.startswith("ALE/"):
        try:
            import ale_py
        except ImportError:
            raise UserError(f"rl.env {env_id!r} is an Atari game: {install_hint('atari')}") from None
        gym.register_envs(ale_py)
    if env_id not in gym.registry:
        known = [k for k in gym.registry if not k.startswith(("ALE/", "phys2d", "tabular"))]
        raise UserError(f"unknown rl.env {env_id!r}{closest(env_id, known)}; e.g. CartPole-v1, Acrobot-v1, MountainCar-v0")


def make_env(env_id: str, *, pixels: bool, height: int, width: int, stack: int, seed: int) -> gym.Env:
    """The environment as the agent sees it: stacked frames (``pixels``) or the true state."""
    check_env_id(env_id)
    if env_id.startswith("ALE/"):
        env = gym.make(env_id, obs_type="grayscale")
        if not pixels:
            raise UserError("method state needs a low-dimensional state; Atari games give pixels only")
        wrapped: gym.Env = PixelFrames(env, height, width, stack, render=False)
    elif pixels:
        env = gym.make(env_id, render_mode="rgb_array")
        wrapped = PixelFrames(env, height, width, stack, render=True)
    else:
        wrapped = gym.make(env_id)
    if not isinstance(wrapped.action_space, gym.spaces.Discrete):
        raise UserError(f"rl.env {env_id!r} has a continuous action space; task rl trains DQN (discrete actions)")
    wrapped.action_space.seed(seed)
    wrapped.reset(seed=seed)
    return wrapped


def collect(
    env: gym.Env, steps: int, seed: int, policy: Any = None, epsilon: float = 1.0
) -> dict[str, np.ndarray]:
    """``steps`` transitions with a random policy (or ``policy(obs) → action`` taking a random
    action with probability ``epsilon``): observations (N, K, H, W) uint8, true states (N, S)
    where the environment has one, episode ids (N,)."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    observations: list[np.ndarray] = []
    states: list[Any] = []
    episodes: list[int] = []
    episode = 0
    for _ in range(steps):
        observations.append(obs)
        states.append(info.get("state"))  # None where the environment gives pixels only
        episodes.append(episode)
        if policy is None or rng.random() < epsilon:
            action = int(rng.integers(env.action_space.n))  # type: ignore[attr-defined]
        else:
            action = int(policy(obs))
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            episode += 1
            obs, info = env.reset()
    out = {"obs": np.stack(observations), "episode": np.asarray(episodes, dtype=np.int64)}
    if all(s is not None for s in states):
        out["state"] = np.stack([np.asarray(s) for s in states]).astype(np.float32)
    return out


class NoisyState(gym.ObservationWrapper):
    """The true state with Gaussian noise of std ``noise`` (method ``state``, ``method.noise``)."""

    def __init__(self, env: gym.Env, noise: float, seed: int) -> None:
        super().__init__(env)
        self.noise, self.rng = noise, np.random.default_rng(seed)

    def observation(self, observation: Any) -> Any:
        return (observation + self.noise * self.rng.standard_normal(np.shape(observation))).astype(np.float32)
