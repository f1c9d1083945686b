"""Task gan: the sample-quality metrics against closed forms, ContraD's loss terms against naive
loops, a few GAN steps of each method through the CLI (evaluation, saved generator, run object)
and one-line errors. Exact resume and SIGTERM → exit 75 of a GAN run are the one loop's: tests/training/."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from contrastkit.cli import main
from contrastkit.evaluate.features import extract_features
from contrastkit.evaluate.generative import frechet_distance, frechet_from_stats, precision_recall
from contrastkit.methods.gan import real_fake_supcon_term, simclr_term
from contrastkit.runner import load_run
from contrastkit.runs import checkpoint_part, load_run_checkpoint

# tiny networks on 8x8 digits: a step takes milliseconds
TINY = {
    "data.image_size": 8, "gan.z_dim": 8, "gan.g_width": 8, "gan.d_width": 8, "gan.feature_dim": 32,
    "gan.sample_every": 5, "gan.grid_samples": 16, "gan.eval_samples": 120, "gan.probe_samples": 300,
    "gan.feature_steps": 4, "gan.feature_width": 4, "train.batch_size": 32, "train.checkpoint_every": 3,
    "train.log_every": 1, "train.progress": "false", "train.num_threads": 1, "train.loggers": "[csv]",
}


def _args(recipe: str, run: Path, **extra: object) -> list[str]:
    sets = [x for k, v in {**TINY, **extra}.items() for x in ("--set", f"{k}={v}")]
    return ["train", recipe, "--out", str(run), *sets]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics' cached feature encoder goes to a temporary cache shared by this module."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "gan-cache"))


# ----------------------------------------------------------------------------- metrics


def test_frechet_distance_matches_the_closed_form_on_gaussians() -> None:
    gen = torch.Generator().manual_seed(0)
    d, n = 4, 40_000
    mu2 = torch.tensor([1.0, -0.5, 0.0, 2.0], dtype=torch.float64)
    var1 = torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=torch.float64)
    var2 = torch.tensor([4.0, 0.5, 0.5, 0.25], dtype=torch.float64)
    a = torch.randn(n, d, generator=gen, dtype=torch.float64) * var1.sqrt()
    b = mu2 + torch.randn(n, d, generator=gen, dtype=torch.float64) * var2.sqrt()
    exact = float(mu2.square().sum() + (var1 + var2 - 2 * (var1 * var2).sqrt()).sum())  # = 6.5 for these
    assert exact == pytest.approx(5.25 + (1 + 0.5 + 0 + 0.25), abs=1e-12)
    assert frechet_distance(a, b) == pytest.approx(exact, abs=0.08)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # full (rotated) covariances: the statistics form against scipy's matrix square root
    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(5), m2 @ m2.T + 0.1 * np.eye(5)
    mu_a, mu_b = rng.normal(size=5), rng.normal(size=5)
    ref = float(((mu_a - mu_b) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))
    got = frechet_from_stats(*(torch.from_numpy(x) for x in (mu_a, s1, mu_b, s2)))
    assert got == pytest.approx(ref, rel=1e-8)


def test_precision_recall_of_identical_disjoint_and_partial_sets() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(600, 8, generator=gen)
    same = precision_recall(a, a.clone(), k=3, block=128)
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    far = precision_recall(a, a + 100.0, k=3)
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    # real: two far clusters; generated: fresh samples of one of them (mode dropping)
    a2 = torch.randn(600, 2, generator=gen)  # low dimension: the k-NN manifolds are tight
    b = torch.randn(600, 2, generator=gen) + 50.0
    fake = torch.randn(600, 2, generator=gen)
    half = precision_recall(torch.cat([a2, b]), fake, k=3)
    assert half["precision"] > 0.9
    assert 0.4 < half["recall"] < 0.55


# ----------------------------------------------------------------------------- ContraD's terms


def _naive_ntxent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    z = F.normalize(torch.cat([z1, z2]), dim=1).double()
    n, total = z1.shape[0], 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        denom = sum(math.exp(float(z[i] @ z[j]) / t) for j in range(2 * n) if j != i)
        total += -(float(z[i] @ z[pos]) / t - math.log(denom))
    return total / (2 * n)


def _naive_real_fake_supcon(real: torch.Tensor, fake: torch.Tensor, t: float) -> float:
    z = F.normalize(torch.cat([real, fake]), dim=1).double()
    r, total = real.shape[0], 0.0
    for i in range(r, z.shape[0]):  # the fake anchors
        others = [j for j in range(z.shape[0]) if j != i]
        log_denom = math.log(sum(math.exp(float(z[i] @ z[j]) / t) for j in others))
        positives = [j for j in others if j >= r]
        total += -sum(float(z[i] @ z[p]) / t - log_denom for p in positives) / len(positives)
    return total / fake.shape[0]


def test_contrad_loss_terms_match_naive_loops() -> None:
    gen = torch.Generator().manual_seed(3)
    z1, z2, fake = (torch.randn(6, 5, generator=gen) for _ in range(3))
    assert float(simclr_term(z1, z2, 0.3)) == pytest.approx(_naive_ntxent(z1, z2, 0.3), rel=1e-5)
    real = torch.cat([z1, z2])
    got = float(real_fake_supcon_term(real, fake[:4], 0.2))
    assert got == pytest.approx(_naive_real_fake_supcon(real, fake[:4], 0.2), rel=1e-5)
    # the term pulls fakes together and away from reals: lower when they separate
    assert float(real_fake_supcon_term(real, fake[:4] + 5.0, 0.2)) < got


# ----------------------------------------------------------------------------- through the CLI


def _log(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "train_log.csv").open()))


def test_each_method_trains_and_evaluates_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "contrad"
    assert main(_args("digits-contrad", run, **{"train.max_steps": 30})) == 0
    out = capsys.readouterr().out
    assert "trained 30 GAN steps" in out and "not Inception" in out and "discriminator linear probe" in out
    res = json.loads((run / "results.json").read_text())
    ev = res["eval"]
    assert math.isfinite(ev["fd"]) and 0 <= ev["precision"] <= 1 and 0 <= ev["recall"] <= 1
    assert ev["real_vs_real"]["fd"] < ev["fd"]  # generated images are further from real ones than real ones
    assert 0.3 < ev["d_probe"]["accuracy"] <= 1  # 10 classes: far above chance even for a tiny D
    rows = _log(run)
    assert len(rows) == 30
    for key in ("loss", "loss@generator", "contrastive@real", "contrastive@fake", "head_loss"):
        assert all(math.isfinite(float(r[key])) for r in rows), key
    con = [float(r["contrastive@real"]) for r in rows]
    assert sum(con[-5:]) < sum(con[:5])  # SimCLR on the real views learns
    assert (run / "generator.safetensors").is_file()
    assert (run / "plots" / "samples_step000005.png").is_file() and (run / "plots" / "samples_final.png").is_file()

    base = tmp_path / "dcgan"
    assert main(_args("digits-contrad", base, **{"method.name": "dcgan", "train.max_steps": 6})) == 0
    res = json.loads((base / "results.json").read_text())
    assert res["config"]["method"] == {"name": "dcgan", "augment": False}
    assert all(math.isfinite(float(r["loss"])) and math.isfinite(float(r["loss@generator"])) for r in _log(base))
    # both runs used the same cached feature space
    assert res["eval"]["feature_encoder"] == ev["feature_encoder"]
    # the run object: compare's figures, the saved generator = the checkpoint's, samples from it
    trained = load_run(run)
    row = trained.compare_row(json.loads((run / "results.json").read_text()))
    assert row["FD (ck feats)"] == ev["fd"] and row["D probe %"] == pytest.approx(100 * ev["d_probe"]["accuracy"])
    assert row["precision"] == ev["precision"] and row["recall"] == ev["recall"]
    state = load_run_checkpoint(run)
    assert state["step"] == 30 and set(state["state"]) >= {"model", "opt_g", "opt_d", "rng"}
    weights = checkpoint_part(state, "model")
    saved = load_file(str(run / "generator.safetensors"))
    assert saved and all(torch.equal(v, weights[f"generator.{k}"]) for k, v in saved.items())
    images = trained.generate(5, seed=1)
    assert images.shape == (5, 1, 8, 8) and images.dtype == torch.uint8 and images.float().std() > 0
    assert torch.equal(images, trained.generate(5, seed=1))


def test_validation_holds_real_images_out_and_resumes_exactly(tmp_path: Path) -> None:
    """eval.val_size real images are held out of the GAN's training split; the Fréchet distance of
    as many generated images to them is measured every eval.val_every steps and after the last,
    apart from the test figures; a run cut at step 5 and resumed has the same curve and weights."""
    from contrastkit.data.image.validation import validation_split
    from contrastkit.tasks import ValidationSpec, get_task
    from contrastkit.tasks.gan.evaluation import feature_encoder

    sets = {"eval.val_size": 100, "eval.val_every": 5, "train.max_steps": 10}
    run, cut = tmp_path / "val", tmp_path / "cut"
    assert main([*_args("digits-contrad", run, **sets), "--no-eval", "--quiet"]) == 0
    assert main([*_args("digits-contrad", cut, **{**sets, "train.max_steps": 5}), "--no-eval", "--quiet"]) == 0
    assert main(["train", "--out", str(cut), "--resume", "--set", "train.max_steps=10", "--no-eval", "--quiet"]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["gan_train"]["train_images"] == 1437 - 100  # digits' training split less the held-out images
    val = res["validation"]
    assert (val["metric"], val["direction"], val["generated"], val["held_out"]["size"]) == ("val_fd", "min", 100, 100)
    assert [p["step"] for p in val["curve"]] == [5, 10] and "eval" not in res
    logged = {int(r["step"]): float(r["val_fd"]) for r in _log(run) if r["val_fd"]}
    assert logged == {p["step"]: p["value"] for p in val["curve"]} and val["value"] == val["curve"][-1]["value"]
    # the figure is the Fréchet distance of the final generator's images to the held-out rows
    trained = load_run(run)
    cfg = trained.config
    split = validation_split(cfg.data, 100, 0)
    assert split is not None and val["held_out"] == split.record()
    encoder, transform, _ = feature_encoder(cfg, torch.device("cpu"), 8, 1, 1437, verbose=False)
    real, fake = (extract_features(encoder, x, transform) for x in (split.validation().images,
                                                                     trained.generate(100, seed=cfg.train.seed + 6)))
    assert val["value"] == pytest.approx(frechet_distance(real, fake), rel=1e-6) and val["value"] > 0
    resumed = json.loads((cut / "results.json").read_text())["validation"]
    assert [(p["step"], p["value"]) for p in resumed["curve"]] == [(p["step"], p["value"]) for p in val["curve"]]
    for key, value in checkpoint_part(load_run_checkpoint(run), "model").items():
        assert torch.equal(value, checkpoint_part(load_run_checkpoint(cut), "model")[key]), key
    # what the task says of its validation: a config without held-out images gets a tenth of digits' 1437
    spec = get_task("gan").validation(cfg)
    assert spec == ValidationSpec("val_fd", "min", (), "eval.val_every")
    cfg.eval.val_size = 0
    assert get_task("gan").validation(cfg).overrides == ("eval.val_size=143",)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["data.image_size=10"], "multiple of 4 from 8 to 64, got 10"),
        (["gan.pr_k=0"], "gan.pr_k must be >= 1, got 0"),
        (["method.lambda_con=-1"], "method.lambda_con must be >= 0"),
        (["method.temperature=0.2"], "method.temperature is not an option of dcgan; its options are: augment"),
        (["data.stream=true"], "data.stream is not read by task 'gan'"),
        (["optim.lr=0.01"], "section 'optim' is not read by task 'gan'"),
        (["method.name=simclr"], "method.name 'simclr' is a method of task image, not of task gan"),
        (["train.batch_size=4096"], "train.batch_size 4096 is larger than the 1437 training images"),
        (["gan.feature_run=/nonexistent/run", "train.max_steps=1"], "gan.feature_run '/nonexistent/run' is not a run folder"),
        (["eval.val_size=5"], "eval.val_size 5 is too few images for a Fréchet distance; use 0 (no validation) or at least 10"),
        (["eval.val_every=100"], "eval.val_every measures on the validation split: set eval.val_size too"),
        (["eval.val_size=1437"], "eval.val_size 1437 leaves no training image: the training split has 1437"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    sets: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = "fashion-mnist-dcgan" if "dcgan" in message else "digits-contrad"
    argv = ["train", recipe, "--out", str(tmp_path / "bad"), "--set", "train.progress=false",
            "--set", "gan.eval_samples=20"]
    assert main([*argv, *(x for s in sets for x in ("--set", s))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_rgb_32px_networks_take_a_finite_step_with_gradients_through_the_augmentation() -> None:
    from contrastkit.recipes import load_config
    from contrastkit.tasks.gan.model import build_gan

    cfg = load_config("digits-contrad", ["gan.g_width=8", "gan.d_width=8", "gan.feature_dim=32", "gan.z_dim=8"])
    cfg.data.augment = None  # the RGB defaults: crop, flip, colour jitter with hue, grayscale
    model = build_gan(cfg, 3, 32, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    d_loss, logs = model.d_step(real, gen)
    d_loss.backward()
    assert math.isfinite(float(d_loss.detach())) and set(logs) >= {"con_real", "con_fake", "dis"}
    assert model.head.weight.grad is not None and all(p.grad is not None for p in model.backbone.parameters())
    model.zero_grad(set_to_none=True)
    g_loss, _ = model.g_step(8, gen, torch.device("cpu"))
    g_loss.backward()
    grads = [p.grad for p in model.generator.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert model.generate(4, gen, torch.device("cpu")).shape == (4, 3, 32, 32)
