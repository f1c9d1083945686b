"""Training survives the ways clusters stop jobs, and nothing is lost on a bad checkpoint — for
every task, since every task trains through the one loop.

SIGTERM mid-run → one line, exit 75, and ``--resume`` ends with the weights of an uninterrupted
run: from outside (a real signal to the process), in one process and in two (``--nproc 2``,
gloo); GAN and RL runs stop the same way and continue (the GAN bit-exactly; an agent continues
in a new episode). A rank killed with SIGKILL ends the job quickly with one line; a truncated
last.pt falls back to previous.pt; a full disk during a checkpoint leaves the previous one
intact; a second signal during the save corrupts nothing, and the signal handlers are those of
before the run afterwards. A 2-process run evaluates once, in rank 0.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from contrastkit.cli import main
from contrastkit.runs import checkpoint_part
from contrastkit.training import Callback, Trainer, load_checkpoint

from ..conftest import tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")  # in-process runs set 1 thread: restore it after

STEPS = 60
TINY = tiny_overrides(**{
    "train.max_steps": STEPS, "train.checkpoint_every": 20, "train.num_threads": 1, "train.log_every": 1,
})


def _sets(overrides: list[str]) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "contrastkit", *args]


def _start(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_rows(run: Path, rows: int, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until the run's train_log.csv has ``rows`` rows (the training is under way)."""
    log = run / "train_log.csv"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.is_file() and len(log.read_text().splitlines()) > rows:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early ({proc.returncode}): {proc.communicate()[1][-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no progress in {run} after {timeout}s")


def _same_state(a: Path, b: Path, optimizers: tuple[str, ...] = ("optimizer",)) -> None:
    """Bit-identical model and optimiser state of two runs' last checkpoints."""
    sa, sb = (load_checkpoint(r / "checkpoints" / "last.pt") for r in (a, b))
    assert sa["step"] == sb["step"]
    for key, value in checkpoint_part(sa).items():
        assert torch.equal(value, checkpoint_part(sb)[key]), key
    for name in optimizers:
        oa, ob = checkpoint_part(sa, name)["state"], checkpoint_part(sb, name)["state"]
        for (ka, va), (kb, vb) in zip(oa.items(), ob.items(), strict=True):
            assert ka == kb and all(torch.equal(va[n], vb[n]) for n in va), ka


def _stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# ----------------------------------------------------------------------------- one process


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted single-process run (in this process: one thread, as the subprocess)."""
    run = tmp_path_factory.mktemp("ref1") / "run"
    assert main(["train", *_sets(TINY), "--no-eval", "--quiet", "--out", str(run)]) == 0
    return run


def test_sigterm_stops_after_the_step_and_resume_is_bit_exact(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "cut"
    proc = _start(_cmd("train", *_sets(TINY), "--no-eval", "--quiet", "--out", str(run)))
    _wait_for_rows(run, 20, proc)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    step = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert 20 <= step < STEPS
    last = _stderr_lines(err)[-1]
    assert last == (
        f"contrastkit: stopped by SIGTERM after step {step} of {STEPS}; checkpoint written; "
        f"continue with: contrastkit train --out {run} --resume"
    )
    assert main(["train", "--out", str(run), "--resume", "--no-eval", "--quiet"]) == 0
    _same_state(reference, run)


class SignalAt(Callback):
    """Sends this process ``signum`` after step ``step`` (as a cluster would, mid-run)."""

    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step, self.signum = step, signum

    def on_step(self, trainer: Trainer, logs: dict[str, float] | None) -> None:
        if trainer.step == self.step:
            os.kill(os.getpid(), self.signum)


def _with_callbacks(monkeypatch: pytest.MonkeyPatch, *callbacks: Callback) -> None:
    from contrastkit import runner

    real = runner.train_run
    monkeypatch.setattr(runner, "train_run", lambda *a, **k: real(*a, **{**k, "callbacks": list(callbacks)}))


GAN = ["digits-contrad", "--set", "gan.z_dim=8", "--set", "gan.g_width=8", "--set", "gan.d_width=8",
       "--set", "gan.feature_dim=16", "--set", "gan.sample_every=0", "--set", "train.batch_size=32",
       "--set", "train.max_steps=6", "--set", "train.checkpoint_every=100", "--set", "train.num_threads=1",
       "--set", "train.time_budget_minutes=null", "--no-eval", "--quiet"]
RL = ["cartpole-pixels-curl", "--set", "rl.steps=120", "--set", "rl.height=24", "--set", "rl.width=48",
      "--set", "rl.crop_margin=2", "--set", "rl.features_dim=16", "--set", "rl.net_arch=[32]",
      "--set", "rl.buffer_size=200", "--set", "rl.learning_starts=40", "--set", "rl.train_freq=10",
      "--set", "rl.gradient_steps=2", "--set", "rl.eval_every=0", "--set", "train.batch_size=16",
      "--set", "train.checkpoint_every=1000", "--no-eval", "--quiet"]


@pytest.mark.parametrize("task", ["gan", "rl"])
def test_gan_and_rl_runs_stop_on_sigterm_with_a_checkpoint_and_resume(
    task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The promise of the README for tasks whose training is not batches through a method: the
    GAN resumes bit-exactly; the agent continues from its checkpoint (replay buffer included)."""
    args, stop = (GAN, 3) if task == "gan" else (RL, 70)
    run = tmp_path / "cut"
    with monkeypatch.context() as patch:
        _with_callbacks(patch, SignalAt(stop))
        assert main(["train", *args, "--out", str(run)]) == 75
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == stop
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"contrastkit: stopped by SIGTERM after step {stop} of {6 if task == 'gan' else 120}; checkpoint written; "
        f"continue with: contrastkit train --out {run} --resume"
    )
    assert main(["train", "--out", str(run), "--resume", "--no-eval", "--quiet"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["train"]["steps"] == (6 if task == "gan" else 120)
    if task == "gan":
        full = tmp_path / "full"
        assert main(["train", *args, "--out", str(full)]) == 0
        _same_state(full, run, optimizers=("opt_g", "opt_d"))
    else:
        assert results["rl"]["replay_buffer_restored"] is True
        assert checkpoint_part(load_checkpoint(run / "checkpoints" / "last.pt"), "num_timesteps") == 120


def test_truncated_last_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    sets = [*TINY[:-1], "train.log_every=10", "train.max_steps=50", "train.checkpoint_every=20"]
    assert main(["train", *_sets(sets), "--no-eval", "--quiet", "--out", str(run)]) == 0
    ckpt = run / "checkpoints"
    assert load_checkpoint(ckpt / "previous.pt")["step"] == 40 and load_checkpoint(ckpt / "last.pt")["step"] == 50
    (tmp_path / "full").mkdir()
    (ckpt / "last.pt").rename(tmp_path / "full" / "last.pt")  # the uninterrupted run's end
    data = (tmp_path / "full" / "last.pt").read_bytes()
    (ckpt / "last.pt").write_bytes(data[: len(data) // 3])  # a kill during a copy, a bad disk
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--no-eval", "--quiet"]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "previous checkpoint" in line]
    assert len(warning) == 1 and str(ckpt / "last.pt") in warning[0] and str(ckpt / "previous.pt") in warning[0]
    (tmp_path / "full" / "checkpoints").mkdir()
    (tmp_path / "full" / "last.pt").rename(tmp_path / "full" / "checkpoints" / "last.pt")
    _same_state(tmp_path / "full", run)  # continued from step 40, it ends where the full run did
    # both unreadable: one line naming both, exit 2
    (ckpt / "previous.pt").write_bytes(b"not a checkpoint")
    (ckpt / "last.pt").write_bytes(b"")
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"contrastkit: error: neither {str(ckpt / 'last.pt')!r} nor {str(ckpt / 'previous.pt')!r} can be read"


def _failing_save(after_bytes: int) -> Callable[..., None]:
    real = torch.save

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(obj, dict) and obj.get("step") == 10:
            f.write(b"x" * after_bytes)  # half a file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real(obj, f, *args, **kwargs)

    return save


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    monkeypatch.setattr("contrastkit.training.checkpoint.torch.save", _failing_save(4096))
    sets = [*TINY, "train.checkpoint_every=5", "train.max_steps=12"]
    assert main(["train", *_sets(sets), "--no-eval", "--quiet", "--out", str(run)]) == 74
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"contrastkit: error: could not write checkpoint {str(run / 'checkpoints' / 'last.pt')!r}: "
        "No space left on device; the previous checkpoint is intact"
    )
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 5
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt"]  # no temporary file left


def test_a_second_signal_during_the_save_corrupts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import contrastkit.training.checkpoint as checkpoint

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    real = torch.save
    signals: list[str] = []

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(obj, dict) and "state" in obj:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C pressed again while the file is written
            signals.append("SIGINT")
        real(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    _with_callbacks(monkeypatch, SignalAt(7, signal.SIGUSR1))  # SLURM's --signal=USR1@120
    run = tmp_path / "run"
    sets = [*TINY, "train.checkpoint_every=100", "train.max_steps=50"]
    assert main(["train", *_sets(sets), "--no-eval", "--quiet", "--out", str(run)]) == 75
    err = capfd.readouterr().err  # the handlers write to the file descriptor (async-signal-safe)
    assert "SIGUSR1 received: finishing this step" in err and "SIGINT received again" in err
    assert "stopped by SIGUSR1 after step 7 of 50" in err
    assert signals == ["SIGINT"]
    state = load_checkpoint(run / "checkpoints" / "last.pt")  # complete and readable
    assert state["step"] == 7
    # the handlers of before the run are back, whatever they were (a background job ignores SIGINT)
    assert {sig: signal.getsignal(sig) for sig in before} == before


# ----------------------------------------------------------------------------- two processes

STEPS2 = 60
TWO = [*tiny_overrides(**{"train.max_steps": STEPS2, "train.checkpoint_every": 20, "train.log_every": 1,
                           "train.dist_timeout_minutes": 0.5, "eval.plots": False, "eval.baselines": False})]


@pytest.fixture(scope="module")
def reference2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """An uninterrupted 2-process run, evaluated (rank 0 alone evaluates and reports)."""
    run = tmp_path_factory.mktemp("ref2") / "run"
    proc = subprocess.run(_cmd("train", "--nproc", "2", *_sets(TWO), "--quiet", "--out", str(run)),
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, proc


def test_two_process_quickstart_evaluates_once_in_rank_0(reference2: tuple[Path, Any]) -> None:
    run, proc = reference2
    assert proc.stdout.count("accuracy (%) on the test split") == 1
    assert proc.stdout.count("distributed: 2 processes") == 1
    results = json.loads((run / "results.json").read_text())
    assert results["train"]["steps"] == STEPS2 and results["eval"]["encoders"]["ssl"]["knn"]["accuracy"] > 0.5
    assert not _stderr_lines(proc.stderr), proc.stderr[-2000:]


def test_sigterm_under_nproc_2_stops_every_process_at_one_step(reference2: tuple[Path, Any], tmp_path: Path) -> None:
    run = tmp_path / "cut"
    proc = _start(_cmd("train", "--nproc", "2", *_sets(TWO), "--quiet", "--out", str(run)))
    _wait_for_rows(run, 25, proc)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-3000:]
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["world_size"] == 2 and len(state["ranks"]) == 2 and 25 <= state["step"] < STEPS2
    assert _stderr_lines(err)[-1] == (
        f"contrastkit: stopped by SIGTERM after step {state['step']} of {STEPS2}; checkpoint written; "
        f"continue with: contrastkit train --out {run} --resume --nproc 2"
    )
    resumed = subprocess.run(_cmd("train", "--out", str(run), "--resume", "--nproc", "2", "--no-eval", "--quiet"),
                             capture_output=True, text=True, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _same_state(reference2[0], run)


def _worker_of_rank(run: Path, rank: int) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(run).encode() in cmdline and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank} for {run}")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker's pid in /proc (Linux)")
def test_a_killed_rank_ends_the_job_quickly_and_the_run_resumes(reference2: tuple[Path, Any], tmp_path: Path) -> None:
    run = tmp_path / "cut"
    proc = _start(_cmd("train", "--nproc", "2", *_sets(TWO), "--quiet", "--out", str(run)))
    _wait_for_rows(run, 25, proc)
    os.kill(_worker_of_rank(run, 1), signal.SIGKILL)
    killed = time.monotonic()
    _out, err = proc.communicate(timeout=120)
    assert time.monotonic() - killed < 30  # train.dist_timeout_minutes=0.5
    assert proc.returncode == 76, err[-3000:]
    assert _stderr_lines(err)[-1] == (
        "contrastkit: process 1 of the job was killed (SIGKILL); the others stopped; resume from the last "
        f"checkpoint with: contrastkit train --out {run} --resume --nproc 2"
    )
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] % 20 == 0  # the last periodic one, intact
