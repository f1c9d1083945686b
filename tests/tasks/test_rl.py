"""Task rl: CURL's bilinear InfoNCE and ATC's temporal pairs against naive references, the
frame wrapper and the crop / shift augmentations, a few hundred CURL steps through the CLI
(losses falling, evaluation, resume) and one-line errors for bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")
pytest.importorskip("gymnasium")

from contrastkit.cli import main
from contrastkit.methods.rl import bilinear_info_nce, temporal_pairs
from contrastkit.rl.augment import center_crop, random_crop, random_shift
from contrastkit.rl.envs import CARTPOLE_BAND, grey_resize, make_env

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


def test_curl_trains_evaluates_and_resumes_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "curl"
    assert main(["train", "cartpole-pixels-curl", "--out", str(run), "--no-eval", *_sets(**{"rl.steps": 120})]) == 0
    first = json.loads((run / "results.json").read_text())
    assert first["train"]["steps"] == 120 and [c["step"] for c in first["rl"]["curve"]] == [60, 120]
    assert (run / "checkpoints" / "last.pt").is_file()
    capsys.readouterr()
    # resume with more steps: continues from step 120 with the saved replay buffer
    assert main(["train", "--out", str(run), "--resume", "--set", "rl.steps=240", "--set", "eval.enabled=true"]) == 0
    out = capsys.readouterr().out
    assert "resumed at step 120/240" in out and "state probe R²" in out and "final return" in out
    results = json.loads((run / "results.json").read_text())
    assert results["train"]["steps"] == 240 and results["rl"]["replay_buffer_restored"] is True
    assert [c["step"] for c in results["rl"]["curve"]] == [60, 120, 180, 240]
    closs = [v for _, v in results["rl"]["contrastive_loss"]]
    assert len(closs) >= 15 and closs[-1] < closs[0]  # one entry per training round; the loss falls
    start, end = results["rl"]["contrastive_first_last"]
    assert end < start
    ev = results["eval"]
    assert set(ev["probe"]["trained"]) == {"cart_position", "cart_velocity", "pole_angle", "pole_angular_velocity"}
    assert ev["probe"]["trained"]["cart_position"] > 0.5  # the cart's position is visible in every frame
    assert len(ev["final_return"]["episodes"]) == 2 and ev["final_return"]["mean"] >= 8
    assert (run / "plots" / "return_curve.png").stat().st_size > 1000


def test_atc_pretrains_then_trains_on_the_frozen_encoder(tmp_path: Path) -> None:
    run = tmp_path / "atc"
    sets = _sets(**{"rl.steps": 60, "method.pretrain_steps": 200, "method.updates": 30, "method.batch_size": 32})
    assert main(["train", "cartpole-pixels-atc", "--out", str(run), "--no-eval", *sets]) == 0
    results = json.loads((run / "results.json").read_text())
    start, end = results["rl"]["contrastive_first_last"]
    assert end < start
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    pre = state["extra"]["atc_encoder"]
    policy = state["policy"]
    for key, value in pre.items():  # frozen: the Q-network's encoder is still the pre-trained one
        assert torch.equal(policy[f"q_net.features_extractor.encoder.{key}"], value)


@pytest.mark.parametrize(
    ("sets", "fragment"),
    [
        (["rl.env=CartPol-v1"], "unknown rl.env 'CartPol-v1' (did you mean 'CartPole-v1'?)"),
        (["rl.env=Pendulum-v1"], "continuous action space"),
        (["rl.height=17"], "rl.height 17 leaves 15 pixels after rl.crop_margin 1"),
        (["method.name=simclr"], "method.name 'simclr' is a method of task image, not of task rl"),
        (["method.delta_t=0"], "method.delta_t is not an option of curl"),
        (["rl.eval_episodes=0"], "rl.eval_episodes must be >= 1, got 0"),
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
    assert "task rl needs: pip install 'contrastkit[rl]'" in capsys.readouterr().err
