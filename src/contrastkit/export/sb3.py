"""`--format sb3`: an RL run's agent as Stable-Baselines3's own ``.zip`` (what ``DQN.save``
writes), which ``stable_baselines3.DQN.load(path)`` loads to act with ``.predict(obs)``.

The zip holds the policy of the run's last checkpoint (Q-network and target network) and its
optimiser's state, the observation and action spaces and the DQN settings as trained (``rl.*``,
``optim.lr``, ``train.batch_size``); no replay buffer, and the exploration rate at 0, so that
``predict`` acts greedily as the run's evaluation does. A pixel agent's encoder reads the
central crop of its frames in training mode too (no random crops: ``q_net(obs)`` right after
loading gives the Q-values it acts on; SB3's ``learn`` on it trains without CURL's augmentation).
Pixel runs (every method but ``state``) read their stacked frames through contrastkit's
encoder, ``contrastkit.rl.agent.PixelExtractor``: the zip names that class, so contrastkit must
be installed where it is loaded, and observations come from the same frame wrapper
(``contrastkit.rl.envs.make_env``, printed with the run's sizes). A ``state`` run's policy is
Stable-Baselines3's own MLP on the environment's observation.

After writing, the zip is loaded back with ``DQN.load`` and its Q-values and greedy actions are
compared with the run's on observations of the run's environment.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contrastkit.errors import UserError
from contrastkit.export.files import atomic_path

PARITY_STEPS = 32  # observations of the environment the loaded agent is checked on
TOL = 1e-5


def check_sb3(out: Path) -> None:
    """The one-line errors before the run is loaded: --out's suffix."""
    if out.suffix != ".zip":
        raise UserError(f"--out {str(out)!r}: a Stable-Baselines3 agent is a .zip file; name it *.zip")


def export_sb3(run: Any, out: Path) -> list[str]:
    """Write the agent of ``run`` (an RL run: ``agent()``, ``q_values(obs)``) to ``out``; load it
    back with ``DQN.load`` and compare it with the run; return the report lines."""
    check_sb3(out)
    from stable_baselines3 import DQN

    cfg = run.config
    r = cfg.rl
    model = run.agent()
    kept = {name: getattr(model, name) for name in ("buffer_size", "exploration_rate", "policy_kwargs")}
    # the settings as trained; greedy; the central crop of the frames in every mode (no random crops)
    model.buffer_size, model.exploration_rate = r.buffer_size, 0.0
    extractor = model.policy_kwargs.get("features_extractor_kwargs")
    if extractor is not None:
        model.policy_kwargs = {**model.policy_kwargs, "features_extractor_kwargs": {**extractor, "augment": False}}
    try:
        with atomic_path(out) as tmp:
            model.save(tmp, exclude=["aux", "augment", "loss_log"])  # CURL's module and logs are not the agent's
    finally:
        for name, value in kept.items():
            setattr(model, name, value)
    pixels = cfg.method.name != "state"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SB3's note that a loaded agent has no environment until one is set
        loaded = DQN.load(str(out), device="cpu")
    obs = _observations(model.get_env(), PARITY_STEPS, cfg.train.seed + 70_000)
    want = run.q_values(obs)
    tensor = loaded.policy.obs_to_tensor(obs)[0]
    with torch.no_grad():
        got = loaded.q_net(tensor).float().cpu().numpy()
    diff = float(np.abs(got - want).max())
    if diff > TOL:
        raise RuntimeError(f"DQN.load({str(out)!r}) gives Q-values that differ from the run's by {diff:.2e}")
    actions = loaded.predict(obs, deterministic=True)[0]
    if not np.array_equal(actions, want.argmax(1)):
        raise RuntimeError(f"DQN.load({str(out)!r}) acts otherwise than the run on the same observations")
    lines = [
        f"wrote {out} (Stable-Baselines3 DQN, {'CnnPolicy' if pixels else 'MlpPolicy'}, "
        f"{int(model.num_timesteps)} environment steps of training; no replay buffer)",
        f"parity with the run on {len(obs)} observations of {r.env}: DQN.load Q-values max abs diff {diff:.2e}, "
        "the same greedy actions",
    ]
    if pixels:
        lines.append("its features extractor is contrastkit.rl.agent.PixelExtractor: DQN.load needs contrastkit "
                     "installed, and observations from contrastkit's frame wrapper")
        env = (f"make_env({r.env!r}, pixels=True, height={r.height}, width={r.width}, stack={r.frame_stack}, "
               "seed=0)  # stacked greyscale frames")
        make = ["    from contrastkit.rl.envs import make_env"]
    else:
        env = f"gymnasium.make({r.env!r})"
        make = ["    import gymnasium"]
    return [*lines, "load it with:", "    from stable_baselines3 import DQN", *make,
            f"    model = DQN.load({str(out)!r})",
            f"    env = {env}",
            "    obs, _ = env.reset(seed=0)",
            "    action, _ = model.predict(obs, deterministic=True)"]


def _observations(vec_env: Any, steps: int, seed: int) -> np.ndarray:
    """``steps`` observations of the run's environment (random actions, new episodes as needed)."""
    env = vec_env.envs[0]
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    seen = [obs]
    while len(seen) < steps:
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            obs, _ = env.reset()
        seen.append(obs)
    return np.stack(seen)
