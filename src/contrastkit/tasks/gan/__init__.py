"""Task ``gan``: a DCGAN-size generator and discriminator on 8–64 px images, with the plain
non-saturating loss (``dcgan``) or a contrastive discriminator (``contrad``, Jeong & Shin 2021).

data: the ``data`` section of the image tasks (digits, Fashion-MNIST, CIFAR, folders, stores;
in memory) → training: one discriminator and one generator update per step (Adam), through the
one loop (a budget in steps or minutes, atomic checkpoints, exact ``--resume``, SIGTERM →
checkpoint and exit 75) → validation (``eval.val_size``): the Fréchet distance of generated images
to real ones held out of the training split, every ``eval.val_every`` steps and after the last
(results.json's ``validation``) → evaluation (test): Fréchet distance and precision / recall (k-NN manifolds)
of generated vs held-out real images **in the feature space of a contrastkit SimCLR encoder
trained on the real data** (not Inception: comparable between runs that share the encoder, not
with published FIDs), and the discriminator's own linear-probe accuracy on the real labels.

Run folder, besides the common files: ``generator.safetensors``, ``plots/samples_step*.png``
(a grid of the same noise every ``gan.sample_every`` steps) and ``plots/samples_final.png``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from contrastkit.config import Config
from contrastkit.data.image.imageset import ImageDataset
from contrastkit.data.image.spec import DataConfig, load_split
from contrastkit.data.image.validation import pretraining_data, validation_split
from contrastkit.errors import UserError
from contrastkit.methods.base import StepOutput
from contrastkit.methods.gan import GANMethod, check_size
from contrastkit.runs import load_run_weights
from contrastkit.tasks.base import RunContext, Task, TrainedRun, ValidationSpec, number, register_task, trained_line
from contrastkit.tasks.gan.evaluation import VAL_METRIC, evaluate_gan, fd_validation, gan_results_table
from contrastkit.tasks.gan.model import GENERATOR_FILE, LOG_NAMES, GanConfig, GanEvalConfig, build_gan, save_grid
from contrastkit.training import Callback, Clock, Trainer, Training, TrainSummary, save_safetensors

MIN_VAL_SIZE = 10  # held-out images of the smallest validation (a Fréchet distance needs a few)

# ----------------------------------------------------------------------------- training


class RealImages:
    """Batches of real images: a seeded permutation per epoch (the last partial batch dropped);
    ``rows``: the images are these rows of ``images`` (a store's selected rows)."""

    def __init__(self, images: Tensor, batch_size: int, seed: int, device: torch.device, rows: Tensor | None = None) -> None:
        self.images, self.batch_size, self.seed, self.device, self.rows = images, batch_size, seed, device, rows
        self.n = images.shape[0] if rows is None else int(rows.numel())
        if batch_size > self.n:
            raise UserError(f"train.batch_size {batch_size} is larger than the {self.n} training images")

    def __len__(self) -> int:
        return self.n // self.batch_size

    def batches(self, epoch: int, start: int = 0) -> Iterator[Tensor]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        for i in range(start, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            if self.rows is not None:
                idx = self.rows[idx]
            yield self.images[idx.to(self.images.device)].to(self.device)

    def units(self, batch: Tensor) -> int:
        return int(batch.shape[0])

    def state_dict(self) -> dict[str, Any]:
        return {}  # batches depend on (seed, epoch) only

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Stateless: see :meth:`state_dict`."""


class GanStep:
    """One discriminator update on a real batch and its fakes, then one generator update
    (Adam, the discriminator frozen meanwhile); noise and augmentations from one generator whose
    state is checkpointed."""

    def __init__(self, model: GANMethod, g: GanConfig, seed: int, device: torch.device) -> None:
        betas = (g.beta1, g.beta2)
        self.model, self.device, self.lr_d = model, device, g.lr_d
        self.opt_g = torch.optim.Adam(model.generator.parameters(), lr=g.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(model.discriminator_parameters(), lr=g.lr_d, betas=betas)
        self.gen = torch.Generator().manual_seed(seed * 7717 + 3)  # noise and augmentations
        self.last: dict[str, Tensor] = {}

    def __call__(self, real: Tensor, clock: Clock) -> StepOutput:
        model = self.model
        self.opt_d.zero_grad(set_to_none=True)
        d_loss, logs = model.d_step(real, self.gen)
        d_loss.backward()
        self.opt_d.step()
        d_params = model.discriminator_parameters()
        for p in d_params:
            p.requires_grad_(False)
        try:
            self.opt_g.zero_grad(set_to_none=True)
            g_loss, g_logs = model.g_step(real.shape[0], self.gen, self.device)
            g_loss.backward()
            self.opt_g.step()
        finally:
            for p in d_params:
                p.requires_grad_(True)
        self.last = {**logs, **g_logs}
        named: dict[str, Any] = {LOG_NAMES.get(k, k): v for k, v in self.last.items()}
        named["lr"] = self.lr_d
        # the loop watches both players' losses for NaN
        return StepOutput(d_loss.detach() + g_loss.detach(), named)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "rng": self.gen.get_state(), "last": dict(self.last)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.gen.set_state(state["rng"])
        self.last = dict(state.get("last") or {})


class SampleGrids(Callback):
    """A grid of the generator's images of the same noise every ``gan.sample_every`` steps."""

    def __init__(self, model: GANMethod, g: GanConfig, seed: int, folder: Path, device: torch.device) -> None:
        self.model, self.every, self.folder, self.device = model, g.sample_every, folder, device
        self.noise = torch.randn(g.grid_samples, g.z_dim, generator=torch.Generator().manual_seed(seed + 1))

    def grid(self, step: int) -> None:
        gen = self.model.generator
        was = gen.training
        gen.eval()
        with torch.no_grad():
            save_grid(gen(self.noise.to(self.device)), self.folder / f"samples_step{step:06d}.png")
        gen.train(was)

    def on_step(self, trainer: Trainer, logs: dict[str, float] | None) -> None:
        if self.every and trainer.step % self.every == 0:
            self.grid(trainer.step)


# ----------------------------------------------------------------------------- the run


class GanRun(TrainedRun):
    """A GAN run: its generator and discriminator."""

    def model(self) -> GANMethod:
        """The trained generator and discriminator (last checkpoint), in eval mode."""

        def build() -> GANMethod:
            train = load_split(self.config.data, "train")
            model = build_gan(self.config, train.channels, int(train.images.shape[-1]), self.device)
            model.load_state_dict(load_run_weights(self.path, self.device))
            return model.eval()

        return self.cached("model", build)

    def generate(self, n: int, *, seed: int = 0) -> Tensor:
        """``n`` generated images, uint8 (n, C, H, W), from the noise of ``seed``."""
        from contrastkit.methods.gan import to_uint8

        with torch.no_grad():
            return to_uint8(self.model().generate(n, torch.Generator().manual_seed(seed), self.device)).cpu()

    def evaluate(self, *, verbose: bool = True) -> dict[str, Any]:
        return evaluate_gan(self.config, self.model(), self.device, self.path, verbose=verbose)

    def results_table(self, ev: dict[str, Any]) -> str:
        return gan_results_table(ev)

    def headline(self, results: dict[str, Any]) -> str:
        tr = results.get("train", {})
        last = results.get("gan_train", {}).get("final", {})
        return (f"{trained_line(tr, 'GAN steps')}, final D loss {number(last.get('d_loss'), '.4f')}, "
                f"G loss {number(last.get('g_loss'), '.4f')}")

    def compare_row(self, results: dict[str, Any]) -> dict[str, Any]:
        ev = results.get("eval", {})
        return {
            "FD (ck feats)": ev.get("fd"),
            "precision": ev.get("precision"),
            "recall": ev.get("recall"),
            "D probe %": None if ev.get("d_probe") is None else 100 * ev["d_probe"]["accuracy"],
        }


# ----------------------------------------------------------------------------- the task


@register_task
class GanTask(Task):
    """Generative adversarial networks, with or without a contrastive discriminator."""

    name = "gan"
    sections: ClassVar[dict[str, type | None]] = {"data": DataConfig, "gan": GanConfig, "optim": None, "eval": GanEvalConfig}
    unread: ClassVar[dict[str, tuple[str, ...]]] = {
        "data": ("views", "crops", "label_fraction", "stream", "workers", "gpu_decode"),
        "train": ("precision", "channels_last", "compile", "sync_batchnorm", "dist_timeout_minutes"),
        "eval": ("baselines", "plots", "batch_size"),
    }
    default_method = "contrad"
    runs = (GanRun,)

    @classmethod
    def validate(cls, cfg: Config) -> None:
        d: DataConfig = cfg.data
        if d.image_size is not None:
            check_size(d.image_size)
        run = cfg.gan.feature_run
        if run is not None and not (Path(run) / "config.yaml").is_file():
            raise UserError(f"gan.feature_run {run!r} is not a run folder (it has no config.yaml)")
        ev: GanEvalConfig = cfg.eval
        if 0 < ev.val_size < MIN_VAL_SIZE:
            raise UserError(f"eval.val_size {ev.val_size} is too few images for a Fréchet distance; "
                            f"use 0 (no validation) or at least {MIN_VAL_SIZE}")
        if ev.val_every and not ev.val_size:
            raise UserError("eval.val_every measures on the validation split: set eval.val_size too "
                            "(e.g. eval.val_size=1000 real images held out of the training split)")

    @classmethod
    def validation(cls, cfg: Config) -> ValidationSpec:
        """The Fréchet distance of generated images to real ones held out of the training split
        (lower is better); where the config holds none out, the overrides hold out a tenth of the
        training split, at most 1000 images."""
        overrides: tuple[str, ...] = ()
        if not cfg.eval.val_size:
            n = len(load_split(cfg.data, "train", all_classes=True))
            overrides = (f"eval.val_size={max(MIN_VAL_SIZE, min(1000, n // 10))}",)
        return ValidationSpec(VAL_METRIC, "min", overrides, "eval.val_every")

    def training(self, ctx: RunContext) -> Training:
        if ctx.world_size > 1:
            raise UserError("task gan trains in one process; run it without torchrun")
        cfg, g, ev = ctx.cfg, ctx.cfg.gan, ctx.cfg.eval
        # the validation slice (eval.val_size) is held out of what the GAN trains on
        split = validation_split(cfg.data, ev.val_size, ev.val_seed, labelled=False)
        data = self.data = load_split(cfg.data, "train") if split is None else pretraining_data(cfg.data, split)
        assert isinstance(data, ImageDataset)
        images = data.images if data.mapped else data.images.to(ctx.device)
        self.size = int(cfg.data.image_size or data.images.shape[-1])
        self.model = build_gan(cfg, data.channels, self.size, ctx.device)
        batches = RealImages(images, cfg.train.batch_size, cfg.train.seed, ctx.device, rows=data.rows)
        self.step = GanStep(self.model, g, cfg.train.seed, ctx.device)
        self.grids = SampleGrids(self.model, g, cfg.train.seed, ctx.run_dir / "plots", ctx.device)
        self.val = None
        if split is not None:
            held = split.validation()
            if cfg.data.train_classes is not None and held.labels is not None:  # those of the classes trained on
                held = held.subset(torch.isin(held.labels, torch.tensor(cfg.data.train_classes)))
            self.val = fd_validation(cfg, self.model, held.images, split.record(), ctx.device,
                                     verbose=ctx.is_main and ctx.verbose, note=None if cfg.train.progress else ctx.log)
        return Training(self.step, batches, unit="images", callbacks=[self.grids, *([self.val] if self.val else [])])

    def describe(self, ctx: RunContext) -> str:
        d = self.data
        return (f"training {ctx.cfg.method.name} GAN on {d.name} ({len(d)} images, {d.channels}x{self.size}x{self.size}) "
                f"on {ctx.device}, batch {ctx.cfg.train.batch_size}")

    def after_training(self, ctx: RunContext, summary: TrainSummary) -> dict[str, Any]:
        """The last grid and the generator; results.json's ``validation`` (with ``eval.val_size``:
        the Fréchet distance to the held-out images, measured at the final step too), apart from
        the test figures of the evaluation."""
        self.grids.grid(summary.steps)
        save_safetensors(self.model.generator.state_dict(), ctx.run_dir / GENERATOR_FILE)
        final = {k: float(v) for k, v in self.step.last.items()}
        out: dict[str, Any] = {"gan_train": {"final": final, "image_size": self.size, "channels": self.data.channels,
                                             "train_images": len(self.data)}}
        if self.val is not None:
            self.val.finish(summary.steps)
            out["validation"] = self.val.results()
        return out


__all__ = ["GENERATOR_FILE", "GanConfig", "GanEvalConfig", "GanRun", "GanTask", "build_gan", "save_grid"]
