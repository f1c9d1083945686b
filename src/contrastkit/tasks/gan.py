"""Task ``gan``: a DCGAN-size generator and discriminator on 8–64 px images, with the plain
non-saturating loss (``dcgan``) or a contrastive discriminator (``contrad``, Jeong & Shin 2021).

data: the image task's ``data`` section and loading (digits, Fashion-MNIST, CIFAR, folders,
stores; in memory) → training: :meth:`GanTask.fit`, the alternating D / G loop (Adam, a budget
in steps or minutes, atomic checkpoints, exact ``--resume``, SIGTERM → checkpoint and exit 75)
→ evaluation: Fréchet distance and precision / recall (k-NN manifolds) of generated vs held-out
real images **in the feature space of a contrastkit SimCLR encoder trained on the real data**
(not Inception: comparable between runs that share the encoder, not with published FIDs), and
the discriminator's own linear-probe accuracy on the real labels.

Run folder, besides the common files: ``generator.safetensors``, ``plots/samples_step*.png``
(a grid of the same noise every ``gan.sample_every`` steps) and ``plots/samples_final.png``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from contrastkit.config import Config, DataConfig
from contrastkit.errors import UserError
from contrastkit.methods.gan import GANMethod, check_size, to_uint8, to_unit
from contrastkit.methods.registry import get_method
from contrastkit.options import option
from contrastkit.runs import CHECKPOINTS, load_run_checkpoint
from contrastkit.tasks.base import RunContext, Task, register_task
from contrastkit.tasks.gan_eval import evaluate_gan, gan_results_table
from contrastkit.tasks.image import load_split
from contrastkit.train import TrainSummary, save_safetensors

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


def _image_size(cfg: Config, images: torch.Tensor) -> int:
    return int(cfg.data.image_size or images.shape[-1])


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


def load_trained_gan(run_dir: Path, cfg: Config, channels: int, size: int, device: torch.device) -> GANMethod:
    model = build_gan(cfg, channels, size, device)
    model.load_state_dict(load_run_checkpoint(run_dir, device)["model"])
    return model.eval()


def save_grid(images: torch.Tensor, path: Path) -> None:
    """Generator output in [-1, 1] → a PNG grid."""
    from torchvision.utils import save_image

    path.parent.mkdir(parents=True, exist_ok=True)
    n = images.shape[0]
    save_image(to_unit(images.detach().float().cpu()).clamp(0, 1), str(path), nrow=max(1, int(n**0.5)), padding=1)


class _Loop:
    """The alternating D / G loop's state: networks, optimisers, random stream, counters."""

    def __init__(self, ctx: RunContext) -> None:
        cfg = ctx.cfg
        g: GanConfig = cfg.gan
        data = load_split(cfg, "train")
        self.images = data.images if data.mapped else data.images.to(ctx.device)
        self.channels, self.size = data.channels, _image_size(cfg, data.images)
        self.n = self.images.shape[0]
        self.batch = cfg.train.batch_size
        if self.batch > self.n:
            raise UserError(f"train.batch_size {self.batch} is larger than the {self.n} training images")
        self.steps_per_epoch = self.n // self.batch
        self.total = cfg.train.max_steps or cfg.train.epochs * self.steps_per_epoch
        self.model = build_gan(cfg, self.channels, self.size, ctx.device)
        betas = (g.beta1, g.beta2)
        self.opt_g = torch.optim.Adam(self.model.generator.parameters(), lr=g.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.model.discriminator_parameters(), lr=g.lr_d, betas=betas)
        self.gen = torch.Generator().manual_seed(cfg.train.seed * 7717 + 3)  # noise and augmentations
        self.fixed_z = torch.randn(g.grid_samples, g.z_dim, generator=torch.Generator().manual_seed(cfg.train.seed + 1))
        self.step, self.elapsed = 0, 0.0
        self.last: dict[str, float] = {}
        self.name = data.name

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "rng": self.gen.get_state(), "step": self.step, "elapsed": self.elapsed, "last": self.last}

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.gen.set_state(state["rng"])
        self.step, self.elapsed, self.last = int(state["step"]), float(state["elapsed"]), dict(state["last"])

    def real_batch(self, seed: int, device: torch.device) -> torch.Tensor:
        epoch, i = divmod(self.step, self.steps_per_epoch)
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        idx = order[i * self.batch : (i + 1) * self.batch]
        return self.images[idx.to(self.images.device)].to(device)

    def one_step(self, real: torch.Tensor, device: torch.device) -> dict[str, float]:
        model = self.model
        self.opt_d.zero_grad(set_to_none=True)
        d_loss, logs = model.d_step(real, self.gen)
        d_loss.backward()
        self.opt_d.step()
        d_params = self.model.discriminator_parameters()
        for p in d_params:
            p.requires_grad_(False)
        try:
            self.opt_g.zero_grad(set_to_none=True)
            g_loss, g_logs = model.g_step(real.shape[0], self.gen, device)
            g_loss.backward()
            self.opt_g.step()
        finally:
            for p in d_params:
                p.requires_grad_(True)
        return {**logs, **g_logs}

    def sample_grid(self, path: Path, device: torch.device) -> None:
        gen = self.model.generator
        was = gen.training
        gen.eval()
        with torch.no_grad():
            save_grid(gen(self.fixed_z.to(device)), path)
        gen.train(was)


def _save(loop: _Loop, run_dir: Path) -> Path:
    from contrastkit.train.checkpoint import atomic_save

    path = run_dir / CHECKPOINTS / "last.pt"
    atomic_save(loop.state(), path, keep_previous=True)
    return path


def train_gan(ctx: RunContext) -> tuple[TrainSummary, dict[str, Any]]:
    """The alternating loop: per step one discriminator and one generator update."""
    from tqdm import tqdm

    from contrastkit.train import TrainingDiverged
    from contrastkit.train.loggers import Loggers
    from contrastkit.train.preemption import Preempted, PreemptionHandler

    cfg, device, run_dir = ctx.cfg, ctx.device, ctx.run_dir
    if ctx.world_size > 1:
        raise UserError("task gan trains in one process; run it without torchrun")
    loop = _Loop(ctx)
    if ctx.resume:
        loop.load(load_run_checkpoint(run_dir, "cpu"))
        ctx.log(f"resumed {run_dir} at step {loop.step}/{loop.total}")
    ctx.log(f"training {cfg.method.name} GAN on {loop.name} ({loop.n} images, {loop.channels}x{loop.size}x{loop.size}) "
            f"on {device}: {loop.total} steps of batch {loop.batch}")
    budget = cfg.train.time_budget_minutes
    stopped_by, start_step = "steps", loop.step
    plots, every = run_dir / "plots", cfg.gan.sample_every
    bar = tqdm(total=loop.total, initial=loop.step, disable=not (cfg.train.progress and ctx.verbose),
               unit="step", dynamic_ncols=True)
    t_run = time.perf_counter()
    t0, base = t_run, loop.elapsed
    with Loggers.open(cfg.train.loggers, run_dir, start_step=loop.step, config=cfg.to_dict()) as loggers, \
            PreemptionHandler(verbose=ctx.verbose) as handler:
        while loop.step < loop.total:
            real = loop.real_batch(cfg.train.seed, device)
            logs = loop.one_step(real, device)
            if not all(map(lambda v: v == v and abs(v) != float("inf"), logs.values())):
                raise TrainingDiverged(f"a GAN loss became NaN or infinite at step {loop.step + 1}: {logs}")
            loop.step += 1
            loop.last = logs
            loop.elapsed = base + time.perf_counter() - t0
            rate = (loop.step - start_step) * loop.batch / max(time.perf_counter() - t_run, 1e-9)
            bar.update(1)
            bar.set_postfix(d=f"{logs['d_loss']:.3f}", g=f"{logs['g_loss']:.3f}", img_s=f"{rate:.0f}")
            if loop.step % cfg.train.log_every == 0 or loop.step == loop.total:
                loggers.log_metrics(loop.step, {"epoch": loop.step / loop.steps_per_epoch, "lr": cfg.gan.lr_d,
                                                "images_per_sec": rate, "elapsed_sec": loop.elapsed,
                                                **{LOG_NAMES.get(k, k): v for k, v in logs.items()}})
            if every and loop.step % every == 0:
                loop.sample_grid(plots / f"samples_step{loop.step:06d}.png", device)
            if handler.signum is not None:
                path = _save(loop, run_dir)
                bar.close()
                raise Preempted(handler.signum, loop.step, loop.total, str(path))
            if loop.step % cfg.train.checkpoint_every == 0:
                _save(loop, run_dir)
            if budget is not None and loop.elapsed >= budget * 60:
                stopped_by = "time_budget"
                break
        _save(loop, run_dir)
    bar.close()
    loop.sample_grid(plots / f"samples_step{loop.step:06d}.png", device)
    save_safetensors(loop.model.generator.state_dict(), run_dir / GENERATOR_FILE)
    seconds = loop.elapsed
    summary = TrainSummary(
        steps=loop.step, epochs_done=loop.step / loop.steps_per_epoch, seconds=seconds,
        images_per_sec=loop.step * loop.batch / max(seconds, 1e-9), final_loss=float(loop.last.get("d_loss", float("nan"))),
        stopped_by=stopped_by,
        peak_memory_mb=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0,
    )
    return summary, {"gan_train": {"final": loop.last, "image_size": loop.size, "channels": loop.channels}}


@register_task
class GanTask(Task):
    """Generative adversarial networks, with or without a contrastive discriminator."""

    name = "gan"
    sections: ClassVar[dict[str, type]] = {"data": DataConfig, "gan": GanConfig}
    default_method = "contrad"
    unit = "images"

    def validate(self, cfg: Config) -> None:
        d: DataConfig = cfg.data
        if d.stream:
            raise UserError("task gan loads its images in memory: data.stream is not supported (use data.name=store for large sets)")
        if d.image_size is not None:
            check_size(d.image_size)
        run = cfg.gan.feature_run
        if run is not None and not (Path(run) / "config.yaml").is_file():
            raise UserError(f"gan.feature_run {run!r} is not a run folder (it has no config.yaml)")
        if d.train_classes is not None and not d.train_classes:
            raise UserError("data.train_classes is empty; give at least one class or leave it out")

    def fit(self, ctx: RunContext) -> tuple[TrainSummary, dict[str, Any]]:
        return train_gan(ctx)

    def evaluate(self, run_dir: Path, cfg: Config, *, verbose: bool = True) -> dict[str, Any]:
        return evaluate_gan(run_dir, cfg, verbose=verbose)

    def results_table(self, ev: dict[str, Any]) -> str:
        return gan_results_table(ev)

    def headline(self, results: dict[str, Any]) -> str:
        tr = results.get("train", {})
        last = results.get("gan_train", {}).get("final", {})
        return (
            f"trained {tr.get('steps')} GAN steps ({tr.get('epochs_done', 0):.1f} epochs) in {tr.get('seconds', 0):.0f}s, "
            f"{tr.get('images_per_sec', 0):.0f} images/s, final D loss {last.get('d_loss', float('nan')):.4f}, "
            f"G loss {last.get('g_loss', float('nan')):.4f}"
        )

    def compare_row(self, results: dict[str, Any]) -> dict[str, Any]:
        ev = results.get("eval", {})
        return {
            "FD (ck feats)": ev.get("fd"),
            "precision": ev.get("precision"),
            "recall": ev.get("recall"),
            "D probe %": None if ev.get("d_probe") is None else 100 * ev["d_probe"]["accuracy"],
        }


__all__ = ["GENERATOR_FILE", "GanConfig", "GanTask", "build_gan", "load_trained_gan", "save_grid", "to_uint8"]
