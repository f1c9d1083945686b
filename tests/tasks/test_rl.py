"""Task rl: CURL's bilinear InfoNCE and ATC's temporal pairs against naive references, the
frame wrapper and the crop / shift augmentations, a few hundred CURL steps through the CLI
(one loop step per environment step, its log, the replay buffer and return curve kept across
--resume, CURL's loss per training round, the state probe) and one-line errors for bad input. SIGTERM → exit 75
and resume of an rl run are the one loop's: tests/training/."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")
pytest.importorskip("gymnasium")

from contrastkit.cli import main
from contrastkit.errors import install_hint
from contrastkit.methods.rl import bilinear_info_nce, temporal_pairs
from contrastkit.rl.augment import center_crop, random_crop, random_shift
from contrastkit.rl.envs import CARTPOLE_BAND, grey_resize, make_env
from contrastkit.runner import load_run
from contrastkit.runs import checkpoint_part
from contrastkit.tasks import ValidationSpec, get_task

TINY = {
    "rl.height": 24, "rl.width": 48, "rl.crop_margin": 2, "rl.features_dim": 16, "rl.net_arch": "[32]",
    "rl.buffer_size": 300, "rl.learning_starts": 40, "rl.train_freq": 10, "rl.gradient_steps": 4,
    "rl.eval_every": 60, "rl.eval_episodes": 2, "rl.probe_steps": 150, "train.batch_size": 16,
    "train.checkpoint_every": 60, "train.num_threads": 1, "eval.plots": True,
}


def _sets(**extra: object) -> list[str]:
    return [x for k, v in {**TINY, **extra}.items() for x in ("--set", f"{k}={v}")]


# ----------------------------------------------------------------------------- the losses


def test_bilinear_info_nce_matches_a_naive_loop_value_and_gradient() -> None:
    gen = torch.Generator().manual_seed(0)
    q0, k0, w0 = (torch.randn(7, 5, generator=gen), torch.randn(7, 5, generator=gen), torch.randn(5, 5, generator=gen))
    q, k, w = (t.clone().double().requires_grad_(True) for t in (q0, k0, w0))
    loss = bilinear_info_nce(q, k, w)
    loss.backward()
    qr, kr, wr = (t.clone().double().requires_grad_(True) for t in (q0, k0, w0))
    rows = []
    for i in range(7):
        logits = torch.stack([qr[i] @ wr @ kr[j] for j in range(7)])
        rows.append(torch.logsumexp(logits, 0) - logits[i])
    ref = torch.stack(rows).mean()
    ref.backward()
    assert torch.allclose(loss, ref, atol=1e-10)
    for got, want in ((q.grad, qr.grad), (k.grad, kr.grad), (w.grad, wr.grad)):
        assert got is not None and want is not None and torch.allclose(got, want, atol=1e-10)


@pytest.mark.parametrize("k", [1, 2, 3, 12])
def test_atc_temporal_pairs_stay_inside_one_episode(k: int) -> None:
    episodes = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4, 4, 4, 4])
    anchors, positives = temporal_pairs(episodes, k)
    ref = [(t, t + k) for t in range(len(episodes)) if t + k < len(episodes) and episodes[t] == episodes[t + k]]
    assert list(zip(anchors.tolist(), positives.tolist(), strict=True)) == ref
    assert (episodes[anchors] == episodes[positives]).all() and ((positives - anchors) == k).all()


# ----------------------------------------------------------------------------- frames and augmentations


def test_grey_resize_keeps_the_band_and_averages_areas() -> None:
    frame = np.full((400, 600, 3), 255, dtype=np.uint8)
    top, bottom = int(CARTPOLE_BAND[0] * 400), int(CARTPOLE_BAND[1] * 400)
    frame[top:bottom, :300] = 0  # left half of the band black, right half white
    out = grey_resize(frame, 10, 20, CARTPOLE_BAND)
    assert out.shape == (10, 20) and out.dtype == np.uint8
    assert (out[:, :10] == 0).all() and (out[:, 10:] == 255).all()


def test_frame_stack_wrapper_shapes_dtype_and_state() -> None:
    env = make_env("CartPole-v1", pixels=True, height=24, width=48, stack=3, seed=0)
    obs, info = env.reset(seed=1)
    assert obs.shape == (3, 24, 48) and obs.dtype == np.uint8 and info["state"].shape == (4,)
    assert (obs[0] == obs[2]).all()  # a new episode repeats its first frame
    frames = [obs]
    for _ in range(8):
        obs = env.step(1)[0]
        frames.append(obs)
    assert (frames[-1][:2] == frames[-2][1:]).all()  # the stack shifts by one frame per step
    assert not (obs[2] == frames[0][2]).all()  # the cart moved
    assert obs.max() > 150 and np.median(obs) == 0  # the cart (inverted: bright) on a black background


def test_random_crop_and_shift_one_window_per_sample_for_all_frames() -> None:
    n, c, h, w, m = 32, 3, 12, 16, 3
    base = torch.arange(h * w).view(1, 1, h, w)
    x = (base + 1000 * torch.arange(c).view(1, c, 1, 1)).expand(n, c, h, w).contiguous()
    out = random_crop(x, m, torch.Generator().manual_seed(0))
    assert out.shape == (n, c, h - 2 * m, w - 2 * m) and out.dtype == x.dtype
    assert ((out - out[:, :1]) == 1000 * torch.arange(c).view(1, c, 1, 1)).all()  # same window, every frame
    offsets = set()
    for i in range(n):  # each crop is a window of the frame at offset (top, left) in [0, 2m]
        top, left = divmod(int(out[i, 0, 0, 0]), w)
        assert 0 <= top <= 2 * m and 0 <= left <= 2 * m
        assert (out[i] == x[i, :, top : top + h - 2 * m, left : left + w - 2 * m]).all()
        offsets.add((top, left))
    assert len(offsets) > 5  # crops really differ
    assert (center_crop(x, m) == x[..., m : h - m, m : w - m]).all()
    u8 = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8)
    shifted = random_shift(u8, 2, torch.Generator().manual_seed(1))
    assert shifted.shape == u8.shape and shifted.dtype == torch.uint8
    assert not (shifted == u8).all()
    shifted = random_shift(x.float(), 2, torch.Generator().manual_seed(1))
    assert ((shifted - shifted[:, :1]) == 1000 * torch.arange(c).view(1, c, 1, 1)).all()


# ----------------------------------------------------------------------------- through the CLI


@dataclass
class CurlRun:
    path: Path
    first: dict[str, Any]  # checkpoint and results after the first 120 steps
    first_results: dict[str, Any]
    resumed_out: str  # what `train --resume` printed


@pytest.fixture(scope="module")
def curl(tmp_path_factory: pytest.TempPathFactory) -> CurlRun:
    """One CURL run shared by the tests below: 120 environment steps without evaluation, then
    --resume to 240 with evaluation on."""
    run = tmp_path_factory.mktemp("rl") / "curl"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "cartpole-pixels-curl", "--out", str(run), "--no-eval", *_sets(**{"rl.steps": 120})]) == 0
    first = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    first_results = json.loads((run / "results.json").read_text())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", "--out", str(run), "--resume", "--set", "rl.steps=240", "--set", "eval.enabled=true"]) == 0
    return CurlRun(run, first, first_results, out.getvalue())


def test_curl_trains_one_environment_step_per_loop_step_and_logs_them(curl: CurlRun) -> None:
    first = curl.first_results["train"]
    assert first["steps"] == 120 and first["unit"] == "env steps" and first["stopped_by"] == "steps"
    assert curl.first["step"] == 120 and checkpoint_part(curl.first, "num_timesteps") == 120
    logged = list(csv.DictReader((curl.path / "train_log.csv").open()))
    rows = [r for r in logged if not r["val_return"]]  # the validation's values make rows of their own
    assert [int(r["step"]) for r in rows] == list(range(10, 241, 10))  # train.log_every 10, resumed rows appended
    validation = {int(r["step"]): float(r["val_return"]) for r in logged if r["val_return"]}
    curve = json.loads((curl.path / "results.json").read_text())["validation"]["curve"]
    assert validation == {p["step"]: p["value"] for p in curve} and list(validation) == [60, 120, 180, 240]
    assert all(float(r["env_steps_per_sec"]) > 0 for r in rows)
    episodes = [float(r["episodes"]) for r in rows]
    assert episodes == sorted(episodes) and episodes[-1] >= 5  # an untrained pole falls within ~10-40 steps
    eps = [float(r["epsilon"]) for r in rows]
    assert eps[0] > 0.3 and eps[-1] == pytest.approx(0.04)  # decays over the first 16 % of rl.steps
    # once learning starts (rl.learning_starts 40, a round every 10 steps) every row has a TD loss, and
    # once an episode has ended the mean episode return
    assert {"loss", "return"} <= set(rows[0]), f"train_log.csv columns: {list(rows[0])}"
    learning = [r for r in rows if int(r["step"]) > 50]
    assert all(math.isfinite(float(r["loss"])) and float(r["return"]) >= 8 for r in learning)


def test_resume_restores_the_replay_buffer_and_continues_the_validation_curve(curl: CurlRun) -> None:
    assert f"resumed {curl.path} at step 120/240" in curl.resumed_out
    state = torch.load(curl.path / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 240 and checkpoint_part(state, "num_timesteps") == 240
    # the transitions of the first 120 steps are still in the buffer, untouched, before the new ones
    before, after = checkpoint_part(curl.first, "buffer"), checkpoint_part(state, "buffer")
    assert before["pos"] == 120 and after["pos"] == 240 and not after["full"]
    for name, saved in before["arrays"].items():
        assert torch.equal(after["arrays"][name][:120], saved[:120]), name
    assert before["arrays"]["observations"][:120].float().mean() > 1  # real frames, not an empty buffer
    assert curl.first_results["rl"]["replay_buffer_restored"] is None
    results = json.loads((curl.path / "results.json").read_text())
    assert results["train"]["steps"] == 240 and results["rl"]["replay_buffer_restored"] is True
    # the validation curve is the validation callback's state: saved at step 120, continued after the resume
    assert [c["step"] for c in curl.first["callbacks"][0]["curve"]] == [60, 120]
    assert [c["step"] for c in state["callbacks"][0]["curve"]] == [60, 120, 180, 240]
    val = results["validation"]
    assert val["curve"] == state["callbacks"][0]["curve"] and val["curve"][:2] == curl.first_results["validation"]["curve"]
    assert (val["metric"], val["direction"], val["episodes"], val["every"]) == ("val_return", "max", 2, 60)
    # what the task says of its validation (a sweep's pruner reads it) is what the run recorded
    spec = get_task("rl").validation(load_run(curl.path).config)
    assert spec == ValidationSpec(val["metric"], val["direction"], (), "rl.eval_every")
    assert val["value"] == val["curve"][-1]["value"] and "curve" not in results["rl"] and "curve" not in results["eval"]
    for point in val["curve"]:  # the mean and spread of the two greedy episodes; an episode lasts >= 8 steps
        assert point["value"] >= 8 and 0 <= point["std"] <= point["value"]
    # the agent's loss log too: the first rounds' entries are kept as they were
    kept = checkpoint_part(curl.first, "loss_log")
    assert len(kept) == 8 and checkpoint_part(state, "loss_log")[:8] == kept  # rounds at 50, 60, ..., 120


def test_curl_loss_falls_and_the_evaluation_probes_the_state(curl: CurlRun) -> None:
    out = curl.resumed_out
    assert "state probe R²" in out and "final return" in out
    results = json.loads((curl.path / "results.json").read_text())
    closs = [v for _, v in results["rl"]["contrastive_loss"]]
    # one entry per training round (50, 60, ..., 240); in 80 updates the loss only comes down from above
    # log(16) towards it (margin-2 crops of 24-pixel frames: docs/agents.md, "keep the crops small")
    assert len(closs) == 20 and closs[-1] < closs[0]
    start, end = results["rl"]["contrastive_first_last"]
    assert end < start
    ev = results["eval"]
    assert set(ev["probe"]["trained"]) == {"cart_position", "cart_velocity", "pole_angle", "pole_angular_velocity"}
    assert ev["probe"]["trained"]["cart_position"] > 0.5  # the cart's position is visible in every frame
    assert len(ev["final_return"]["episodes"]) == 2 and ev["final_return"]["mean"] >= 8
    assert (curl.path / "plots" / "return_curve.png").stat().st_size > 1000
    row = load_run(curl.path).compare_row(results)  # the figures `contrastkit compare` shows
    assert row["return"] == ev["final_return"]["mean"] and row["return std"] == ev["final_return"]["std"]
    assert row["probe R²"] == pytest.approx(float(np.mean(list(ev["probe"]["trained"].values()))))


def test_atc_pretrains_then_trains_on_the_frozen_encoder(tmp_path: Path) -> None:
    run = tmp_path / "atc"
    sets = _sets(**{"rl.steps": 60, "method.pretrain_steps": 200, "method.updates": 30, "method.batch_size": 32})
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "cartpole-pixels-atc", "--out", str(run), "--no-eval", *sets]) == 0
    results = json.loads((run / "results.json").read_text())
    start, end = results["rl"]["contrastive_first_last"]
    assert end < start and len(results["rl"]["atc_pretrain_loss"]) == 20
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    pre = checkpoint_part(state, "extra")["atc_encoder"]
    policy = checkpoint_part(state, "policy")
    assert pre and checkpoint_part(state, "n_updates") > 0  # the Q-network did train
    for key, value in pre.items():  # frozen: the Q-network's encoder is still the pre-trained one
        assert torch.equal(policy[f"q_net.features_extractor.encoder.{key}"], value)
        assert torch.equal(policy[f"q_net_target.features_extractor.encoder.{key}"], value)


@pytest.mark.parametrize(
    ("sets", "fragment"),
    [
        (["rl.env=CartPol-v1"], "unknown rl.env 'CartPol-v1' (did you mean 'CartPole-v1'?)"),
        (["rl.env=Pendulum-v1"], "continuous action space"),
        (["rl.height=17"], "rl.height 17 leaves 15 pixels after rl.crop_margin 1"),
        (["method.name=simclr"], "method.name 'simclr' is a method of task image, not of task rl"),
        (["method.delta_t=0"], "method.delta_t is not an option of curl"),
        (["rl.eval_episodes=0"], "rl.eval_episodes must be >= 1, got 0"),
        # the loop's budget is rl.steps, DQN's optimiser is SB3's Adam: these keys do nothing for rl
        (["train.max_steps=5"], "train.max_steps is not read by task 'rl'"),
        (["train.epochs=2"], "train.epochs is not read by task 'rl'"),
        (["optim.weight_decay=0.1"], "optim.weight_decay is not read by task 'rl'; the optim keys it reads: lr"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    sets: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [x for s in sets for x in ("--set", s)]
    assert main(["train", "cartpole-pixels-curl", "--out", str(tmp_path / "r"), *args, "--set", "rl.steps=10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err


def test_missing_extra_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)
    assert main(["train", "cartpole-pixels-curl", "--out", str(tmp_path / "r")]) == 2
    assert f"task rl needs: {install_hint('rl')}" in capsys.readouterr().err
