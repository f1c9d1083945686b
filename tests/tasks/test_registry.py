"""The spine: methods declare their options and register themselves; tasks are plug-ins.

A toy method and a toy task (a Task subclass with its own section, batches, callback and run
object), defined here and nowhere else, train, resume and evaluate through the CLI; every
shipped recipe refuses the options of other methods with one line; keys a task does not read are
errors naming it and are left out of config.yaml; keys that moved name their new place; run
folders written by contrastkit 0.1 still load.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import yaml
from torch import Tensor, nn

from contrastkit.cli import main
from contrastkit.config import MOVED
from contrastkit.errors import UserError
from contrastkit.losses import info_nce
from contrastkit.methods.base import ImageMethodOptions, StepOutput, TwoViewMethod
from contrastkit.methods.registry import (
    MethodOptions,
    all_methods,
    get_method,
    methods_of_task,
    register_method,
    unregister_method,
)
from contrastkit.options import describe, option
from contrastkit.recipes import (
    config_from_dict,
    load_config,
    read_recipe,
    read_run_config,
    recipe_names,
)
from contrastkit.runner import load_run
from contrastkit.runs import load_run_checkpoint, load_run_weights, save_run_config
from contrastkit.tasks import (
    RunContext,
    Task,
    TrainedRun,
    get_task,
    register_task,
    task_names,
    unregister_task,
)
from contrastkit.training import Callback, GradientStep, Training, TrainSummary

from ..conftest import tiny_overrides

LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy"

pytestmark = pytest.mark.usefixtures("one_thread")


def _sets(overrides: list[str]) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]


# ----------------------------------------------------------------------------- a toy method


@dataclass
class ToyOptions(ImageMethodOptions):
    """The toy method's options."""

    temperature: float = option(0.5, "InfoNCE temperature", gt=0)
    noise: float = option(0.0, "Gaussian noise added to the projections", ge=0)


class ToyContrast(TwoViewMethod):
    """Toy contrast: SimCLR with a one-layer head (defined in a test, trained by the CLI)."""

    Options = ToyOptions
    opts: ToyOptions

    def build(self) -> None:
        self.projector = nn.Linear(self.feature_dim, self.head.projection_dim)

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        x1, x2 = self.views_of(batch, "toy")
        n = x1.shape[0]
        z = self.projector(self.encoder(torch.cat([x1, x2])))
        z = z + self.opts.noise * torch.randn_like(z)
        idx = torch.arange(2 * n)
        loss = info_nce(z, positive_index=(idx + n) % (2 * n), temperature=self.opts.temperature)
        return self.output(loss, z[:n], z[n:])


@pytest.fixture
def toy_method() -> Iterator[str]:
    register_method("toy_contrast", options=ToyOptions, tasks=("image",), paper="a test, 2026")(ToyContrast)
    yield "toy_contrast"
    unregister_method("toy_contrast")


def test_a_method_defined_in_a_test_trains_and_evaluates_through_the_cli(
    toy_method: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "toy"
    sets = tiny_overrides(**{"method.name": toy_method, "method.temperature": 0.3, "train.max_steps": 30,
                             "optim.lr": 0.003, "eval.plots": False, "eval.baselines": False,
                             "eval.few_label_shots": "[5]", "eval.few_label_draws": 1, "eval.max_train_samples": 600})
    assert main(["train", *_sets(sets), "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "linear" in out and "ssl" in out
    results = json.loads((run / "results.json").read_text())
    assert results["config"]["method"] == {"name": "toy_contrast", "diagnostics": True, "temperature": 0.3, "noise": 0.0}
    assert results["eval"]["encoders"]["ssl"]["linear_probe"]["accuracy"] > 0.5
    log = list(csv.DictReader((run / "train_log.csv").open()))
    losses = [float(r["loss"]) for r in log]
    assert sum(losses[-5:]) < sum(losses[:5])
    # self.output(): the collapse statistics of its two views are logged (method.diagnostics)
    assert all(float(r["emb_std"]) > 0 and float(r["eff_rank"]) >= 1 for r in log) and "alignment" in log[0]
    assert read_run_config(run).method == ToyOptions(name="toy_contrast", temperature=0.3)
    # its options are documented from the dataclass, and validated like a built-in's
    assert main(["methods", toy_method]) == 0
    listing = capsys.readouterr().out
    assert "toy_contrast  (task image; a test, 2026)" in listing and "method.noise" in listing
    assert "Gaussian noise added to the projections" in listing
    sets = ["--set", f"method.name={toy_method}", "--set", "method.queue_size=8"]
    assert main(["train", *sets, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "contrastkit: error: method.queue_size is not an option of toy_contrast; "
        "its options are: diagnostics, temperature, noise"
    )
    assert main(["train", "--set", f"method.name={toy_method}", "--set", "method.noise=-1", "--out", str(tmp_path / "y")]) == 2
    assert "method.noise must be >= 0, got -1.0" in capsys.readouterr().err


# ----------------------------------------------------------------------------- a toy task


@dataclass
class PointsConfig:
    """The toy task's section: points around a few centres in D dimensions."""

    n: int = option(400, "points", ge=8)
    dim: int = option(6, "dimensions", ge=2)
    clusters: int = option(4, "centres (the labels of the evaluation)", ge=2)
    noise: float = option(0.3, "augmentation: Gaussian jitter of each view", ge=0)


@dataclass
class PointsNCEOptions(MethodOptions):
    """The toy task's method."""

    temperature: float = option(0.2, "InfoNCE temperature", gt=0)
    width: int = option(16, "embedding width", ge=1)


class PointsNCE(nn.Module):
    """Points NCE: an MLP trained with InfoNCE between two jittered copies of each point."""

    def __init__(self, options: PointsNCEOptions, dim: int) -> None:
        super().__init__()
        self.opts = options
        self.encoder = nn.Sequential(nn.Linear(dim, 32), nn.ReLU(), nn.Linear(32, options.width))

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        a, b = batch["views"]
        loss = info_nce(self.encoder(a), self.encoder(b), temperature=self.opts.temperature)
        return StepOutput(loss=loss, logs={"loss": loss.detach()})

    def on_step_end(self, step: int, total_steps: int) -> None:
        """No schedule."""


class PointsBatches:
    """Batches of two jittered views of shuffled points; deterministic in (seed, epoch)."""

    def __init__(self, x: Tensor, batch_size: int, noise: float, seed: int) -> None:
        self.x, self.batch_size, self.noise, self.seed = x, batch_size, noise, seed

    def __len__(self) -> int:
        return self.x.shape[0] // self.batch_size

    def batches(self, epoch: int, start: int = 0) -> Iterator[dict[str, Any]]:
        gen = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        order = torch.randperm(self.x.shape[0], generator=gen)
        for i in range(len(self)):
            rows = self.x[order[i * self.batch_size : (i + 1) * self.batch_size]]
            views = [rows + self.noise * torch.randn(rows.shape, generator=gen) for _ in range(2)]
            if i >= start:
                yield {"views": views}

    def units(self, batch: dict[str, Any]) -> int:
        return int(batch["views"][0].shape[0])

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Stateless: batches depend on (seed, epoch) only."""


class PointsSeen(Callback):
    """The task's own state, kept by the loop: the points its steps have seen (results.json's
    ``points_seen``), saved in the run's checkpoint and restored on resume."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size, self.points = batch_size, 0

    def on_step(self, trainer: Any, logs: dict[str, float] | None) -> None:
        self.points += self.batch_size

    def state_dict(self) -> dict[str, Any]:
        return {"points": self.points}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.points = int(state["points"])


def _points(cfg: Any) -> tuple[Tensor, Tensor]:
    p: PointsConfig = cfg.points
    gen = torch.Generator().manual_seed(cfg.train.seed)
    centres = 3 * torch.randn(p.clusters, p.dim, generator=gen)
    labels = torch.arange(p.n) % p.clusters
    return centres[labels] + 0.5 * torch.randn(p.n, p.dim, generator=gen), labels


def _points_model(cfg: Any) -> nn.Module:
    return get_method(cfg.method.name, "points").build(cfg.method, dim=cfg.points.dim)


class PointsRun(TrainedRun):
    """A points run: its encoder, evaluated by kNN accuracy on the second half of the points."""

    def evaluate(self, *, verbose: bool = True) -> dict[str, Any]:
        from contrastkit.evaluate.knn import knn_predict

        x, y = _points(self.config)
        model = _points_model(self.config)
        model.load_state_dict(load_run_weights(self.path))
        with torch.no_grad():
            z = model.encoder(x)  # type: ignore[operator]
        half = x.shape[0] // 2
        pred = knn_predict(z[:half], y[:half], z[half:], num_classes=self.config.points.clusters, k=5)
        return {"knn_accuracy": float((pred == y[half:]).float().mean())}

    def results_table(self, ev: dict[str, Any]) -> str:
        return f"points: kNN accuracy {100 * ev['knn_accuracy']:.1f}%"


class PointsTask(Task):
    """Points: embeddings of clustered points, evaluated by nearest-neighbour accuracy."""

    name = "points"
    sections: ClassVar[dict[str, type | None]] = {"points": PointsConfig}
    unread: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": ("channels_last", "sync_batchnorm"),
        "eval": ("baselines", "plots", "batch_size"),
    }
    default_method = "points_nce"
    runs = (PointsRun,)

    def training(self, ctx: RunContext) -> Training:
        x, _ = _points(ctx.cfg)
        batches = PointsBatches(x, ctx.local_batch, ctx.cfg.points.noise, ctx.cfg.train.seed)
        self.seen = PointsSeen(batches.batch_size)
        step = GradientStep(_points_model(ctx.cfg), ctx.cfg.optim, ctx.cfg.train, device=ctx.device)
        return Training(step, batches, unit="points", callbacks=[self.seen])

    def describe(self, ctx: RunContext) -> str:
        return f"training {ctx.cfg.method.name} on {ctx.cfg.points.n} points"

    def after_training(self, ctx: RunContext, summary: TrainSummary) -> dict[str, Any]:
        return {"points_seen": self.seen.points}

    def load(self, run_dir: Path) -> TrainedRun:
        return PointsRun(Path(run_dir), self.cfg)


@pytest.fixture
def points_task() -> Iterator[str]:
    register_method("points_nce", options=PointsNCEOptions, tasks=("points",), paper="a test, 2026")(PointsNCE)
    register_task(PointsTask)
    yield "points"
    unregister_task("points")
    unregister_method("points_nce")


def test_a_task_defined_in_a_test_runs_its_life_cycle_through_the_cli(
    points_task: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The runner, the run folder, resume, evaluate, the report, load_run and the capability
    errors, for a task that exists only in this test."""
    recipe = tmp_path / "points.yaml"
    recipe.write_text(
        "task: points\npoints: {n: 256, clusters: 4}\nmethod: {temperature: 0.3}\noptim: {lr: 0.01}\n"
        "train: {epochs: 6, batch_size: 64, progress: false, checkpoint_every: 4, log_every: 4}\n"
    )
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "training points_nce on 256 points: 24 steps" in out  # the task's describe(), the loop's count
    assert "trained 24 steps (6.0 epochs)" in out and "points/s" in out and "points: kNN accuracy" in out
    # the run folder: config.yaml holds the task's sections without the keys it does not read
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["task"] == "points" and saved["points"] == {"n": 256, "dim": 6, "clusters": 4, "noise": 0.3}
    assert saved["eval"] == {"enabled": True, "report": True} and "channels_last" not in saved["train"]
    assert saved["method"] == {"name": "points_nce", "temperature": 0.3, "width": 16}
    state = load_run_checkpoint(run)
    assert state["step"] == 24 and set(state["state"]) >= {"model", "optimizer"}
    assert state["callbacks"] == [{"points": 24 * 64}]  # the task's callback state is in the checkpoint
    log = list(csv.DictReader((run / "train_log.csv").open()))
    assert [int(r["step"]) for r in log] == [4, 8, 12, 16, 20, 24] and float(log[0]["points_per_sec"]) > 0
    assert float(log[-1]["loss"]) < float(log[0]["loss"])
    results = json.loads((run / "results.json").read_text())
    assert results["config"] == saved
    assert results["train"]["unit"] == "points" and results["points_seen"] == 24 * 64  # after_training's entry
    assert results["eval"]["knn_accuracy"] > 0.9
    report = (run / "report.html").read_text()
    assert "points: kNN accuracy" in report and "trained 24 steps" in report
    opened = load_run(run)
    assert type(opened) is PointsRun and opened.task == "points" and opened.results["eval"] == results["eval"]

    # resume with more epochs continues from the checkpoint, the task's callback state with it
    assert main(["train", "--out", str(run), "--resume", "--set", "train.epochs=8"]) == 0
    assert f"resumed {run} at step 24/32" in capsys.readouterr().out
    results = json.loads((run / "results.json").read_text())
    assert results["train"]["steps"] == 32 and results["points_seen"] == 32 * 64
    assert [int(r["step"]) for r in csv.DictReader((run / "train_log.csv").open())] == list(range(4, 33, 4))
    # evaluate re-runs the run object's evaluation: results.json and the report are rewritten
    (run / "report.html").unlink()
    results["eval"] = {"knn_accuracy": -1.0}
    (run / "results.json").write_text(json.dumps(results))
    assert main(["evaluate", str(run)]) == 0
    assert "points: kNN accuracy" in capsys.readouterr().out
    assert json.loads((run / "results.json").read_text())["eval"]["knn_accuracy"] > 0.9
    assert "points: kNN accuracy" in (run / "report.html").read_text()

    # its section is its own: other tasks refuse it, and it refuses theirs; it reads no eval.plots
    assert main(["train", "digits-simclr", "--set", "points.n=9", "--out", str(tmp_path / "x")]) == 2
    assert "section 'points' belongs to task points; this recipe's task is 'image'" in capsys.readouterr().err
    assert main(["train", str(recipe), "--set", "data.name=digits", "--out", str(tmp_path / "y")]) == 2
    assert "section 'data' belongs to task image / image_text / gan; this recipe's task is 'points'" in capsys.readouterr().err
    assert main(["train", str(recipe), "--set", "eval.plots=false", "--out", str(tmp_path / "z")]) == 2
    assert "eval.plots is not read by task 'points'; the eval keys it reads: enabled" in capsys.readouterr().err
    # capabilities it lacks are one-line errors naming the tasks that have them
    for argv, message in (
        (["recommend", str(run), "--user", "1"],
         "contrastkit recommend works on runs of task recsys / sequences; this run's task is 'points'"),
        (["similar", str(run), "--item", "1"],
         "contrastkit similar works on runs of task recsys / sequences; this run's task is 'points'"),
        (["embed", str(run), "--out", str(tmp_path / "e.npy")], "task 'points' cannot export embeddings"),
        (["export", str(run), "--format", "arrays", "--out", str(tmp_path / "e.npz")],
         "this run's task is 'points', which exports to: none of the formats"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_registries_list_the_built_in_tasks_and_methods() -> None:
    assert set(task_names()) >= {"image", "text", "image_text", "recsys"}
    assert set(methods_of_task("image")) == {
        "simclr", "moco_v2", "moco_v3", "byol", "simsiam", "barlow_twins", "vicreg", "supcon", "swav", "dino", "nnclr",
    }
    assert set(methods_of_task("recsys")) == {"mf", "lightgcn", "sgl", "simgcl", "xsimgcl"}
    assert set(methods_of_task("text")) == {"simcse", "simcse_supervised", "cosent", "angle"}
    assert set(methods_of_task("image_text")) == {"clip", "siglip"}
    for spec in all_methods():
        assert spec.paper and spec.summary and "\n" not in spec.summary, spec.name
        assert spec.options().name == "", spec.name  # the registry sets the name
        assert all(help_text for _, _, _, help_text in describe(spec.options)), spec.name
        for task in spec.tasks:
            assert task in task_names(), (spec.name, task)
    for name in task_names():
        assert get_task(name).default_method in methods_of_task(name)


def test_methods_command_lists_every_method_with_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for spec in all_methods():
        assert f"{spec.name}  (task {' / '.join(spec.tasks)}; {spec.paper})" in out
    assert "method.queue_size = 4096" in out  # MoCo v2's default
    assert "method.negatives.kind = 'uniform'" in out
    assert main(["methods", "--task", "recsys"]) == 0
    out = capsys.readouterr().out
    assert "xsimgcl" in out and "simclr" not in out and "method.cl_layer = 1" in out
    assert main(["methods", "--task", "gans"]) == 2
    assert "unknown --task 'gans' (did you mean 'gan'?)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- misplaced options


def _other_options(own: str) -> dict[str, Any]:
    """Each option of the other methods (of any task) that ``own`` lacks, with a valid value."""
    mine = set(get_method(own).option_names())
    out: dict[str, Any] = {}
    for name in (m.name for m in all_methods()):
        defaults = get_method(name).options()
        for key in get_method(name).option_names():
            if key not in mine and key not in out:
                value = getattr(defaults, key)
                out[key] = {"kind": "uniform"} if key == "negatives" else value
    return out


@pytest.mark.parametrize("recipe", recipe_names())
def test_every_shipped_recipe_refuses_other_methods_options_in_one_line(recipe: str) -> None:
    base = read_recipe(recipe)
    cfg = load_config(recipe)
    spec = get_method(cfg.method.name)
    listed = ", ".join(spec.option_names())
    others = _other_options(cfg.method.name)
    assert len(others) >= 10, recipe
    for key, value in others.items():
        data = {**base, "method": {**base.get("method", {}), key: value}}
        with pytest.raises(UserError) as info:
            config_from_dict(data)
        assert str(info.value) == f"method.{key} is not an option of {cfg.method.name}; its options are: {listed}"


@pytest.mark.parametrize("old", sorted(MOVED))
def test_moved_keys_name_their_new_place(old: str) -> None:
    recipe = "ml100k-lightgcn" if old.startswith("recsys.") else "fashion-mnist-clip"
    with pytest.raises(UserError, match=rf"^{old} has moved: use {MOVED[old]} "):
        load_config(recipe, [f"{old}=1"])


def test_switching_method_or_task_drops_what_the_recipe_set_for_the_old_one() -> None:
    with pytest.warns(UserWarning, match=r"dropped from the recipe: method.temperature"):
        cfg = load_config("digits-simclr", ["method.name=byol"])
    assert cfg.method == get_method("byol").make_options({})
    # the image recipe's own sections go, and so do the keys of its eval section that text does not have
    with pytest.warns(UserWarning, match=r"dropped from the recipe: section data, section model, "
                                         r"eval.few_label_shots, eval.finetune$"):
        cfg = load_config(None, ["task=text", "text.train_file=sick:train"])
    assert cfg.method.name == "simcse" and cfg.method.temperature == 0.2  # kept: SimCSE has it
    assert cfg.to_dict()["eval"] == {"enabled": True, "report": True, "baselines": True, "batch_size": 512, "dev_every": 0}


# ----------------------------------------------------------------------------- keys a task does not read


@pytest.mark.parametrize(
    ("recipe", "key", "message"),
    [
        ("sick-simcse", "eval.knn_k=5", "eval.knn_k is not read by task 'text'"),
        ("ml100k-lightgcn", "eval.knn_k=5", "eval.knn_k is not read by task 'recsys'"),
        ("ml100k-lightgcn", "eval.plots=false", "eval.plots is not read by task 'recsys'; the eval keys it reads: enabled"),
        ("ml100k-lightgcn", "train.channels_last=true", "train.channels_last is not read by task 'recsys'"),
        ("sick-simcse", "eval.plots=false", "eval.plots is not read by task 'text'; the eval keys it reads: enabled, "
            "baselines, batch_size"),
        ("fashion-mnist-dcgan", "optim.lr=0.1", "section 'optim' is not read by task 'gan'"),
        ("fashion-mnist-clip", "data.views=2",
         "data.views is not read by task 'image_text'; the data keys it reads: name, root,"),
        ("fashion-mnist-clip", "text.lazy=true", "text.lazy is not read by task 'image_text'"),
    ],
)
def test_a_key_the_task_does_not_read_is_an_error_naming_the_task(recipe: str, key: str, message: str) -> None:
    with pytest.raises(UserError) as info:
        load_config(recipe, [key])
    assert str(info.value).startswith(message) and "\n" not in str(info.value), str(info.value)


def test_config_yaml_leaves_out_what_the_task_does_not_read(tmp_path: Path) -> None:
    """Every key a task declares unread (and a common section it replaces with None) is missing
    from the run's config.yaml, and the file loads back as the same config."""
    for recipe in ("ml100k-lightgcn", "sick-simcse", "fashion-mnist-clip", "fashion-mnist-dcgan", "text-word2vec"):
        cfg = load_config(recipe)
        task = get_task(cfg.task)
        folder = tmp_path / recipe
        folder.mkdir()
        save_run_config(cfg, folder)
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        for section, cls in task.sections.items():
            if cls is None:
                assert section not in saved, (recipe, section)
        for section, keys in task.unread.items():
            assert section in saved and not set(keys) & set(saved[section]), (recipe, section)
        again = read_run_config(folder)
        assert again.to_dict() == cfg.to_dict() and again.method == cfg.method, recipe
    assert "optim" not in yaml.safe_load((tmp_path / "fashion-mnist-dcgan" / "config.yaml").read_text())
    assert yaml.safe_load((tmp_path / "ml100k-lightgcn" / "config.yaml").read_text())["eval"] == {"enabled": True, "report": True}


# ----------------------------------------------------------------------------- older run folders


@pytest.mark.parametrize(
    ("legacy", "overrides"),
    [
        # 0.1 wrote cifar_stem: true; today's recipes say auto, which is the same network at 8 px
        ("digits-byol", ["model.cifar_stem=true"]),
        ("digits-moco-v2", ["model.cifar_stem=true"]),
        ("ml100k-sgl", ["recsys.root=../shared/data/ml-100k"]),
        ("ml100k-mf", ["recsys.root=../shared/data/ml-100k"]),
        ("fashion-mnist-clip", ["model.cifar_stem=true"]),
        ("sick-simcse", ["text.data_root=../shared/data/sick"]),
    ],
)
def test_run_folders_of_contrastkit_0_1_still_load(legacy: str, overrides: list[str], tmp_path: Path) -> None:
    """config.yaml files written by 0.1 (every method's knobs, every task's sections, the
    recsys model in the recsys section) load as the same run."""
    (tmp_path / "config.yaml").write_text((LEGACY / f"{legacy}.yaml").read_text())
    old = read_run_config(tmp_path)
    sets = ["train.max_steps=3", "train.batch_size=32", "train.num_threads=1", "train.log_every=1", *overrides]
    now = load_config(legacy, [*sets, "eval.enabled=false"])  # 0.1 wrote eval.enabled false into them all
    assert old.method == now.method
    assert old.sections == now.sections  # the task's own sections and its optim / train / eval
    assert old.train == now.train and old.optim == now.optim and old.eval == now.eval
