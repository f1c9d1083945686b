"""Task ``rl``: reinforcement learning from pixels with a contrastive encoder.

An off-policy agent (Stable-Baselines3 DQN) acts in a Gymnasium environment seen as stacked,
downscaled greyscale frames; its Q-network reads them through a contrastkit conv encoder
(its features extractor). Methods (:mod:`contrastkit.methods.rl`): ``curl`` (auxiliary
contrastive loss during training), ``atc`` (reward-free contrastive pre-training, then RL on
the frozen encoder), ``pixels`` (no contrastive term) and ``state`` (the true state, the upper
bound). The one training loop runs the agent an environment step at a time (SIGTERM →
checkpoint with the replay buffer → exit 75; ``--resume`` continues from it, in a new episode).

Validation: the mean greedy return of ``rl.eval_episodes`` episodes (``val_return``, seeds apart
from the test's) every ``rl.eval_every`` environment steps and after the last, through the one
validation callback (results.json's ``validation``). Evaluation (test): the final return (mean ±
std over ``rl.eval_episodes`` other episodes), and a linear (ridge) probe of the true state
from the frozen encoder on held-out frames: R² per state variable, for the trained encoder and
the same network at random initialisation.

Run folder, besides the common files: ``checkpoints/last.pt`` (agent, optimisers, counters,
the validation curve and, with ``rl.save_buffer``, the replay buffer), ``plots/return_curve.png``
(the validation curve).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from contrastkit.config import Config
from contrastkit.errors import UserError, install_hint
from contrastkit.methods.registry import get_method
from contrastkit.methods.rl import ATCOptions
from contrastkit.options import option
from contrastkit.runs import checkpoint_part, load_run_checkpoint
from contrastkit.tasks.base import RunContext, Task, TrainedRun, ValidationSpec, number, register_task, trained_line
from contrastkit.training import Training, TrainSummary
from contrastkit.training.callbacks import Validation


@dataclass
class RLConfig:
    """The environment, its frames and the DQN agent (its lr: optim.lr, batch: train.batch_size)."""

    env: str = option("CartPole-v1", "Gymnasium environment id with discrete actions (ALE/... needs ale-py)")
    steps: int = option(10000, "environment steps of training", ge=1)
    height: int = option(32, "frame height after downscaling (pixels)", ge=8)
    width: int = option(96, "frame width after downscaling (pixels)", ge=8)
    frame_stack: int = option(3, "frames stacked into one observation", ge=1)
    crop_margin: int = option(
        1, "random crops drop 2·margin rows and columns (shifts of up to ±margin px); the agent acts on the central crop", ge=0
    )
    features_dim: int = option(50, "width of the encoder's features", ge=1)
    net_arch: list[int] = option(help="hidden layers of the Q-network after the encoder", factory=lambda: [256, 256], ge=1)
    buffer_size: int = option(10000, "transitions in the replay buffer", ge=2)
    learning_starts: int = option(1000, "random steps before learning starts", ge=0)
    gamma: float = option(0.99, "discount", gt=0, le=1)
    train_freq: int = option(64, "environment steps between training rounds", ge=1)
    gradient_steps: int = option(16, "gradient steps per training round", ge=1)
    target_update_interval: int = option(10, "environment steps between target-network copies", ge=1)
    exploration_fraction: float = option(0.16, "share of training over which epsilon decays", gt=0, le=1)
    exploration_final_eps: float = option(0.04, "final epsilon of the epsilon-greedy policy", ge=0, le=1)
    eval_every: int = option(2000, "environment steps between validations (greedy episodes; 0: at the end only)", ge=0)
    eval_episodes: int = option(5, "greedy episodes per validation and in the final evaluation", ge=1)
    probe_steps: int = option(3000, "held-out frames for the state probe (0: no probe)", ge=0)
    save_buffer: bool = option(True, "checkpoints hold the replay buffer (resume continues with the same data)")


def _require() -> None:
    try:
        import gymnasium  # noqa: F401
        import stable_baselines3  # noqa: F401
    except ImportError:
        raise UserError(f"task rl needs: {install_hint('rl')}") from None


def _pixels(cfg: Config) -> bool:
    return bool(cfg.method.name != "state")


def _make_env(cfg: Config, seed: int) -> Any:
    from contrastkit.rl.envs import NoisyState, make_env

    r: RLConfig = cfg.rl
    env = make_env(r.env, pixels=_pixels(cfg), height=r.height, width=r.width, stack=r.frame_stack, seed=seed)
    noise = float(getattr(cfg.method, "noise", 0.0))
    return NoisyState(env, noise, seed) if noise > 0 else env


def _build_agent(cfg: Config, env: Any, device: torch.device, *, buffer_size: int | None = None) -> Any:
    """The DQN agent (with its contrastive module for curl) on ``env``."""
    from contrastkit.rl.agent import ContrastiveDQN, PixelExtractor
    from contrastkit.rl.augment import random_crop

    r: RLConfig = cfg.rl
    pixels = _pixels(cfg)
    policy_kwargs: dict[str, Any] = {"net_arch": list(r.net_arch)}
    if pixels:
        policy_kwargs["features_extractor_class"] = PixelExtractor
        policy_kwargs["features_extractor_kwargs"] = {
            "features_dim": r.features_dim, "margin": r.crop_margin, "augment": bool(getattr(cfg.method, "augment", True)),
        }
    model = ContrastiveDQN(
        "CnnPolicy" if pixels else "MlpPolicy", env, learning_rate=cfg.optim.lr,
        buffer_size=buffer_size or r.buffer_size, learning_starts=r.learning_starts,
        batch_size=cfg.train.batch_size, gamma=r.gamma, train_freq=r.train_freq,
        gradient_steps=r.gradient_steps, target_update_interval=r.target_update_interval,
        exploration_fraction=r.exploration_fraction, exploration_final_eps=r.exploration_final_eps,
        optimize_memory_usage=pixels, replay_buffer_kwargs={"handle_timeout_termination": not pixels},
        policy_kwargs=policy_kwargs, seed=cfg.train.seed, device=device, verbose=0,
    )
    from stable_baselines3.common.logger import Logger

    model.set_logger(Logger(folder=None, output_formats=[]))  # values for our logs, no SB3-* folder in /tmp
    if cfg.method.name == "curl":
        encoder = model.q_net.features_extractor.encoder
        model.aux = get_method("curl", "rl").build(cfg.method, encoder=encoder)
        model.augment = lambda x: random_crop(x, r.crop_margin)
    return model


def _encoders(model: Any) -> list[torch.nn.Module]:
    return [model.q_net.features_extractor.encoder, model.q_net_target.features_extractor.encoder]


def _pretrain_atc(ctx: RunContext) -> tuple[dict[str, torch.Tensor], list[float]]:
    """ATC: collect reward-free rollouts (random policy), train the encoder contrastively on
    (o_t, o_{t+k}) of the same episode; returns its weights and the loss per update."""
    from contrastkit.methods.rl import temporal_pairs
    from contrastkit.rl.agent import PixelEncoder
    from contrastkit.rl.augment import center_crop, random_shift
    from contrastkit.rl.envs import collect

    cfg, r = ctx.cfg, ctx.cfg.rl
    opts: ATCOptions = cfg.method  # type: ignore[assignment]
    seed = cfg.train.seed
    data = collect(_make_env(cfg, seed + 20_000), opts.pretrain_steps, seed + 20_000)
    anchors, positives = temporal_pairs(torch.from_numpy(data["episode"]), opts.delta_t)
    if anchors.numel() == 0:
        raise UserError(f"method.pretrain_steps {opts.pretrain_steps} gives no pair o_t, o_(t+{opts.delta_t}) in one episode")
    ctx.log(f"atc: {opts.pretrain_steps} reward-free steps, {anchors.numel()} temporal pairs, {opts.updates} updates")
    obs = torch.from_numpy(data["obs"]).to(ctx.device)
    c, h, w = obs.shape[1:]
    encoder = PixelEncoder(c, h - 2 * r.crop_margin, w - 2 * r.crop_margin, r.features_dim).to(ctx.device)
    atc = get_method("atc", "rl").build(opts, encoder=encoder).to(ctx.device)
    gen = torch.Generator().manual_seed(seed + 31)

    def view(idx: torch.Tensor) -> torch.Tensor:
        x = center_crop(obs[idx.to(ctx.device)], r.crop_margin).float() / 255.0
        return random_shift(x, opts.shift, gen)

    losses = []
    for _ in range(opts.updates):
        pick = torch.randint(0, anchors.numel(), (min(opts.batch_size, anchors.numel()),), generator=gen)
        losses.append(atc.update(view(anchors[pick]), view(positives[pick])))  # type: ignore[operator]
    return {k: v.detach().cpu() for k, v in encoder.state_dict().items()}, losses


def _window_means(values: list[float], windows: int = 20) -> list[float]:
    if not values:
        return []
    chunks = np.array_split(np.asarray(values, dtype=np.float64), min(windows, len(values)))
    return [float(c.mean()) for c in chunks]


VAL_METRIC = "val_return"  # the mean greedy return of the validation episodes
VAL_SEED = 10_000  # validation episodes start from train.seed + 10_000 + i; the final test's from + 50_000


def _validation(model: Any, cfg: Config, ctx: RunContext) -> Validation:
    """The run's validation: greedy episodes every ``rl.eval_every`` environment steps and after
    the last (``val_return``, their mean; ``std`` their spread), through the one validation
    callback; its curve is saved with the checkpoint, so a resumed run continues it."""
    from contrastkit.rl.agent import episode_returns

    r: RLConfig = cfg.rl
    seed = cfg.train.seed + VAL_SEED
    env = _make_env(cfg, seed)

    def evaluate() -> dict[str, float]:
        returns = episode_returns(model, env, r.eval_episodes, seed)
        return {"value": float(np.mean(returns)), "std": float(np.std(returns))}

    describe = {"episodes": r.eval_episodes, "seeds": f"train.seed + {VAL_SEED} + episode (the final test: + 50000)"}
    return Validation(evaluate, metric=VAL_METRIC, every=r.eval_every or None, direction="max", describe=describe,
                      note=ctx.log)


# ----------------------------------------------------------------------------- the run


@contextlib.contextmanager
def _kept_random_state() -> Iterator[None]:
    """Python's, numpy's and torch's random state as they were before (building an agent seeds them)."""
    py, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


class RLRun(TrainedRun):
    """An agent: its policy, the return curve of its training, its encoder's state probe."""

    def agent(self) -> Any:
        """The trained agent: a Stable-Baselines3 DQN on the run's environment with the policy (and
        its optimiser) of the last checkpoint, acting greedily (``run.agent().predict(obs)``);
        built once per state of the saved weights, leaving the caller's random state as it was."""
        _require()

        def build() -> Any:
            cfg = self.config
            with _kept_random_state():
                model = _build_agent(cfg, _make_env(cfg, cfg.train.seed + 50_000), self.device, buffer_size=2)
            state = load_run_checkpoint(self.path)
            model.policy.load_state_dict(checkpoint_part(state, "policy"))
            model.policy.optimizer.load_state_dict(checkpoint_part(state, "optimizer"))  # to train on from it
            model.num_timesteps = int(checkpoint_part(state, "num_timesteps"))
            model.policy.set_training_mode(False)
            return model

        return self.cached("agent", build)

    def q_values(self, obs: Any) -> np.ndarray:
        """The agent's Q-value of each action for one observation (A,) or a batch of them (N, A)."""
        model = self.agent()
        tensor, batched = model.policy.obs_to_tensor(obs)
        with torch.no_grad():
            q: np.ndarray = model.q_net(tensor).float().cpu().numpy()
        return q if batched else q[0]

    def evaluate(self, *, verbose: bool = True) -> dict[str, Any]:
        _require()
        from contrastkit.rl.agent import encode, episode_returns, state_names, state_probe
        from contrastkit.rl.envs import collect

        cfg, device = self.config, self.device
        r: RLConfig = cfg.rl
        seed = cfg.train.seed
        env = _make_env(cfg, seed + 50_000)
        model = _build_agent(cfg, env, device, buffer_size=2)
        state = load_run_checkpoint(self.path)
        model.policy.load_state_dict(checkpoint_part(state, "policy"))
        returns = episode_returns(model, env, r.eval_episodes, seed + 50_000)
        # the validation curve (the plot's): results.json's, else the checkpoint's (training cut short)
        curve = (self.results.get("validation") or {}).get("curve") or (state.get("callbacks") or [{}])[0].get("curve", [])
        out: dict[str, Any] = {
            "env": r.env, "method": cfg.method.name, "steps": int(checkpoint_part(state, "num_timesteps")),
            "final_return": {"mean": float(np.mean(returns)), "std": float(np.std(returns)), "episodes": returns},
            "probe": None,
        }
        if verbose:
            mean, std = np.mean(returns), np.std(returns)
            print(f"evaluated {self.path}: return {mean:.1f} ± {std:.1f} over {len(returns)} episodes", flush=True)
        if _pixels(cfg) and r.probe_steps > 0:
            data = collect(_make_env(cfg, seed + 60_000), r.probe_steps, seed + 60_000,
                           policy=lambda o: model.predict(o, deterministic=True)[0], epsilon=0.5)
            if "state" in data:
                names = state_names(r.env, data["state"].shape[1])
                trained = encode(_encoders(model)[0], data["obs"], r.crop_margin, device)
                torch.manual_seed(seed + 4242)
                fresh = _build_agent(cfg, env, device, buffer_size=2)
                random_init = encode(_encoders(fresh)[0], data["obs"], r.crop_margin, device)
                out["probe"] = {
                    "frames": int(data["obs"].shape[0]),
                    "trained": state_probe(trained, data["state"], data["episode"], names),
                    "random_init": state_probe(random_init, data["state"], data["episode"], names),
                }
        if cfg.eval.plots and curve:
            out["plots"] = [str(_plot_curve(curve, cfg, self.path / "plots" / "return_curve.png"))]
        return out

    def results_table(self, ev: dict[str, Any]) -> str:
        fr = ev["final_return"]
        lines = [
            f"rl: {ev['env']}, method {ev['method']}, {ev['steps']} environment steps",
            f"final return over {len(fr['episodes'])} greedy episodes: {fr['mean']:.1f} ± {fr['std']:.1f}",
        ]
        probe = ev.get("probe")
        if probe:
            lines += [f"state probe R² (ridge, {probe['frames']} held-out frames):",
                      f"  {'variable':<24}{'trained':>9}{'random init':>13}"]
            for name, value in probe["trained"].items():
                lines.append(f"  {name:<24}{value:>9.3f}{probe['random_init'][name]:>13.3f}")
        return "\n".join(lines)

    def headline(self, results: dict[str, Any]) -> str:
        tr = results.get("train", {})
        last = (results.get("validation") or {}).get("final") or {}
        return (f"{trained_line(tr, 'environment steps', epochs=False)}; last validation return "
                f"{number(last.get('value'), '.1f')} ± {number(last.get('std'), '.1f')}")

    def compare_row(self, results: dict[str, Any]) -> dict[str, Any]:
        ev = results.get("eval", {})
        row: dict[str, Any] = {}
        if ev:
            row["return"] = ev["final_return"]["mean"]
            row["return std"] = ev["final_return"]["std"]
            if ev.get("probe"):
                row["probe R²"] = float(np.mean(list(ev["probe"]["trained"].values())))
        return row


# ----------------------------------------------------------------------------- the task


@register_task
class RLTask(Task):
    """Reinforcement learning from pixels; a contrastive encoder (CURL, ATC) vs pixels / state."""

    name = "rl"
    sections: ClassVar[dict[str, type | None]] = {"rl": RLConfig}
    unread: ClassVar[dict[str, tuple[str, ...]]] = {
        "optim": ("name", "weight_decay", "momentum", "warmup_fraction", "schedule", "final_lr_fraction",
                  "grad_clip", "scale_lr_by_batch"),
        "train": ("epochs", "max_steps", "precision", "channels_last", "compile", "sync_batchnorm",
                  "dist_timeout_minutes"),
        "eval": ("baselines", "batch_size"),
    }
    default_method = "curl"
    runs = (RLRun,)

    @classmethod
    def needs(cls, cfg: Config) -> tuple[str, str]:
        env = cfg.rl.env
        return env, "atari" if env.startswith("ALE/") else "rl"

    @classmethod
    def validate(cls, cfg: Config) -> None:
        r: RLConfig = cfg.rl
        for side in ("height", "width"):
            if getattr(r, side) - 2 * r.crop_margin < 16:
                raise UserError(
                    f"rl.{side} {getattr(r, side)} leaves {getattr(r, side) - 2 * r.crop_margin} pixels after "
                    f"rl.crop_margin {r.crop_margin} on each side; the encoder needs at least 16"
                )
        _require()
        from contrastkit.rl.envs import check_env_id

        check_env_id(r.env)

    @classmethod
    def validation(cls, cfg: Config) -> ValidationSpec:
        """Every run validates: the mean greedy return of ``rl.eval_episodes`` episodes."""
        return ValidationSpec(VAL_METRIC, "max", (), "rl.eval_every")

    def training(self, ctx: RunContext) -> Training:
        from contrastkit.rl.agent import AgentStep, EnvSteps

        if ctx.world_size > 1:
            raise UserError("task rl trains in one process; run it without --nproc / torchrun")
        cfg, r = ctx.cfg, ctx.cfg.rl
        seed = cfg.train.seed
        extra: dict[str, Any] = {}
        if cfg.method.name == "atc" and not ctx.resume:
            t0 = time.perf_counter()
            weights, losses = _pretrain_atc(ctx)
            extra.update(atc_encoder=weights, atc_loss=losses, atc_seconds=time.perf_counter() - t0)
        env = _make_env(cfg, seed)
        model = self.agent = _build_agent(cfg, env, ctx.device)
        if cfg.method.name == "atc":
            for enc in _encoders(model):
                if "atc_encoder" in extra:
                    enc.load_state_dict(extra["atc_encoder"])
                enc.requires_grad_(not getattr(cfg.method, "freeze_encoder", True))
        self.step = AgentStep(model, r.steps, buffer=r.save_buffer, extra=extra)
        self.val = _validation(model, cfg, ctx)
        return Training(self.step, EnvSteps(r.steps), unit="env steps", callbacks=[self.val], epochs=False)

    def describe(self, ctx: RunContext) -> str:
        r: RLConfig = ctx.cfg.rl
        seen = f"{r.frame_stack}×{r.height}×{r.width} frames" if _pixels(ctx.cfg) else "the true state"
        return f"training DQN + {ctx.cfg.method.name} on {r.env} ({seen}) for {r.steps} steps on {ctx.device}"

    def after_training(self, ctx: RunContext, summary: TrainSummary) -> dict[str, Any]:
        model, extra = self.agent, self.step.extra
        self.val.finish(summary.steps)
        log = np.asarray(getattr(model, "loss_log", []) or [[0.0, np.nan, np.nan]], dtype=np.float64)
        contrastive = [float(x) for x in log[:, 2] if np.isfinite(x)]
        rl_results: dict[str, Any] = {
            "td_loss": [[float(s), float(v)] for s, v in log[:, :2] if np.isfinite(v)],
            "contrastive_loss": [[float(s), float(v)] for s, v in log[:, [0, 2]] if np.isfinite(v)] or None,
            "replay_buffer_restored": getattr(self.step, "restored", None) if ctx.resume else None,
        }
        if ctx.cfg.method.name == "atc":
            rl_results["atc_pretrain_loss"] = _window_means(extra["atc_loss"])
            contrastive = list(extra["atc_loss"])
        if contrastive:
            rl_results["contrastive_first_last"] = [float(np.mean(contrastive[:5])), float(np.mean(contrastive[-5:]))]
        return {"rl": rl_results, "validation": self.val.results()}


def _plot_curve(curve: list[dict[str, float]], cfg: Config, out: Path) -> Path:
    """The validation curve: greedy return (mean ± std over the episodes) against environment steps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = np.array([c["step"] for c in curve], dtype=float)
    mean = np.array([c["value"] if "value" in c else c["mean"] for c in curve])  # "mean": a run folder from before 0.2
    std = np.array([c.get("std", 0.0) for c in curve])
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    ax.plot(steps, mean, color="tab:blue", linewidth=1.5, marker="o", markersize=3)
    ax.fill_between(steps, mean - std, mean + std, color="tab:blue", alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("validation return (greedy)")
    ax.set_title(f"{cfg.rl.env}: DQN + {cfg.method.name}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, format="png")
    return out
