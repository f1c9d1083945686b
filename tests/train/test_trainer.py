"""The trainer: exact resume after an interruption, NaN handling, atomic checkpoints, schedules."""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import pytest
import torch

from contrastkit.config import load_config
from contrastkit.runs import new_run_dir
from contrastkit.tasks.runner import train
from contrastkit.train import LARS, TrainingDiverged, load_checkpoint, lr_factor

from ..conftest import tiny_overrides


class _Interrupt(Exception):
    pass


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def test_resume_after_interruption_is_exact(tmp_path: Path) -> None:
    cfg = load_config("digits-simclr", tiny_overrides(**{"train.max_steps": 6, "train.checkpoint_every": 3}))
    full = new_run_dir(cfg, str(tmp_path / "full"), resume=False)
    train(cfg, full, progress=False, verbose=False)

    cut = new_run_dir(cfg, str(tmp_path / "cut"), resume=False)

    def kill_at_5(step: int, logs: dict[str, float]) -> None:
        if step == 5:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(cfg, cut, progress=False, verbose=False, callbacks=[kill_at_5])
    assert load_checkpoint(cut / "checkpoints" / "last.pt")["step"] == 3
    summary = train(cfg, cut, resume=True, progress=False, verbose=False)
    assert summary.steps == 6
    a, b = _weights(full), _weights(cut)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    # the log was truncated at the checkpoint and redone: one row per step, no duplicates
    steps = [line.split(",")[0] for line in (cut / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == [str(i) for i in range(1, 7)]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    cfg = load_config("digits-simclr", tiny_overrides(**{"train.max_steps": 8, "train.checkpoint_every": 2}))
    run = new_run_dir(cfg, str(tmp_path / "nan"), resume=False)

    def poison(step: int, logs: dict[str, float]) -> None:
        if step == 3:
            # corrupt one weight so that the next forward pass yields NaN
            for p in model_params[0]:
                p.data.fill_(float("nan"))
                break

    model_params: list = []
    import contrastkit.train.trainer as trainer_mod

    original = trainer_mod.Trainer.__init__

    def spy(self, model, *args, **kwargs):  # type: ignore[no-untyped-def]
        original(self, model, *args, **kwargs)
        model_params.append(list(model.parameters()))

    trainer_mod.Trainer.__init__ = spy  # type: ignore[method-assign]
    try:
        with pytest.raises(TrainingDiverged, match=r"loss became nan at step 4; the last good checkpoint \(step 2\)"):
            train(cfg, run, progress=False, verbose=False, callbacks=[poison])
    finally:
        trainer_mod.Trainer.__init__ = original  # type: ignore[method-assign]
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_checkpoint_loads_without_code_and_rejects_garbage(tmp_path: Path) -> None:
    from contrastkit.errors import UserError

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(bad)
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


def test_existing_run_folder_needs_resume(tmp_path: Path) -> None:
    from contrastkit.errors import UserError

    cfg = load_config("digits-simclr", tiny_overrides())
    run = new_run_dir(cfg, str(tmp_path / "r"), resume=False)
    (run / "x").write_text("x")
    with pytest.raises(UserError, match="already exists; pass --resume"):
        new_run_dir(cfg, str(run), resume=False)
    with pytest.raises(UserError, match="no checkpoint"):
        new_run_dir(cfg, str(run), resume=True)


def test_lr_schedule_warmup_then_cosine() -> None:
    assert lr_factor(0.05, 0.1) == pytest.approx(0.5)
    assert lr_factor(0.1, 0.1) == pytest.approx(1.0)
    assert lr_factor(0.55, 0.1) == pytest.approx(0.5)
    assert lr_factor(1.0, 0.1) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(1.0, 0.1, final_fraction=0.1) == pytest.approx(0.1)
    assert lr_factor(0.7, 0.0, schedule="constant") == 1.0
    values = [lr_factor(i / 100, 0.1) for i in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_lars_trust_ratio_matches_formula() -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    b = torch.nn.Parameter(torch.randn(4))
    opt = LARS([{"params": [w], "lars": True, "weight_decay": 0.1}, {"params": [b], "lars": False, "weight_decay": 0.0}],
               lr=0.5, momentum=0.0, trust_coefficient=0.01)
    w.grad = torch.randn(4, 3)
    b.grad = torch.randn(4)
    w0, b0 = w.detach().clone(), b.detach().clone()
    opt.step()
    g = w.grad + 0.1 * w0
    trust = 0.01 * w0.norm() / g.norm()
    torch.testing.assert_close(w.detach(), w0 - 0.5 * trust * g)
    torch.testing.assert_close(b.detach(), b0 - 0.5 * b.grad)
    assert math.isfinite(float(w.detach().sum()))


_HEAP = r"""
import sys
import torch
from contrastkit.config import load_config
from contrastkit.tasks.runner import setup_runtime
setup_runtime(load_config(None, [f"train.keep_freed_memory={sys.argv[1]}", "train.num_threads=1"]), distributed=False)

def heap() -> int:  # bytes of the process's heap ([heap] in /proc/self/maps)
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            lo, hi = line.split()[0].split("-")
            return int(hi, 16) - int(lo, 16)
    return 0

start = heap()
blocks = [torch.ones(1 << 20) for _ in range(16)]  # 16 tensors of 4 MiB, as a step's temporaries
grown = heap() - start
del blocks  # freed: kept in the heap for the next step, or given back to the OS
print(grown >> 20, (heap() - start) >> 20)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc thresholds")
def test_freed_memory_stays_in_the_heap_for_the_next_step() -> None:
    """train.keep_freed_memory (default on): blocks below 32 MiB come from the heap and stay
    there once freed, instead of being mapped for each allocation and unmapped on free (glibc's
    default above 128 KiB), which page-faults them in again every step (1.5x slower recommendation
    steps on CPU, see contrastkit.train.malloc)."""
    import subprocess

    grown = {}
    for keep in ("true", "false"):
        proc = subprocess.run([sys.executable, "-c", _HEAP, keep], capture_output=True, text=True, timeout=120,
                              check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        grown[keep] = [int(v) for v in proc.stdout.split()]
    assert grown["true"][0] >= 56 and grown["true"][1] >= 56, grown  # 64 MiB in the heap, and kept there
    assert grown["false"][0] < 8, grown  # each block mapped on its own (and unmapped when freed)
