"""The one loop: exact resume after an interruption (callbacks' state included), the check for
a non-finite loss, atomic checkpoints, schedules, progress without a terminal, the allocator."""

from __future__ import annotations

import io
import itertools
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from contrastkit.recipes import load_config
from contrastkit.runner import train_run
from contrastkit.runs import checkpoint_part, new_run_dir
from contrastkit.training import LARS, Callback, Trainer, TrainingDiverged, load_checkpoint, lr_factor
from contrastkit.training.progress import Progress

from ..conftest import InterruptAt, Interrupted, tiny_overrides


class Validations(Callback):
    """A stateful callback: a validation every 2 steps, counted, each one logged to a list."""

    def __init__(self) -> None:
        self.count, self.at = 0, []

    def on_step(self, trainer: Trainer, logs: dict[str, float] | None) -> None:
        if trainer.step % 2 == 0:
            self.count += 1
            self.at.append(trainer.step)
            trainer.request_checkpoint()  # the count and the weights in one atomic file

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])


def _weights(run: Path) -> dict[str, torch.Tensor]:
    weights: dict[str, torch.Tensor] = checkpoint_part(load_checkpoint(run / "checkpoints" / "last.pt"), "model")
    return weights


def test_resume_after_an_interruption_is_exact(tmp_path: Path) -> None:
    """Killed after step 5 (checkpoints every 2 steps, each after a validation): the resumed run
    ends with the uninterrupted run's weights, optimiser and log, and counts each validation once."""
    cfg = load_config("digits-simclr", tiny_overrides(**{"train.max_steps": 6, "train.checkpoint_every": 100}))
    full = new_run_dir(cfg, str(tmp_path / "full"), resume=False)
    done = Validations()
    train_run(cfg, full, progress=False, verbose=False, callbacks=[done])
    cut = new_run_dir(cfg, str(tmp_path / "cut"), resume=False)
    with pytest.raises(Interrupted):
        train_run(cfg, cut, progress=False, verbose=False, callbacks=[Validations(), InterruptAt(5)])
    state = load_checkpoint(cut / "checkpoints" / "last.pt")
    assert state["step"] == 4 and state["callbacks"][1] == {"count": 2}  # the monitor, ours, the interrupter
    resumed = Validations()
    summary, _ = train_run(cfg, cut, resume=True, progress=False, verbose=False, callbacks=[resumed])
    assert summary.steps == 6 and summary.unit == "images" and summary.throughput > 0
    assert resumed.count == done.count == 3 and resumed.at == [6]
    a, b = _weights(full), _weights(cut)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    sa, sb = (load_checkpoint(r / "checkpoints" / "last.pt")["state"]["optimizer"]["state"] for r in (full, cut))
    for key in sa:
        assert all(torch.equal(sa[key][n], sb[key][n]) for n in sa[key]), key
    # the log was truncated at the checkpoint and redone: one row per step, no duplicates
    steps = [line.split(",")[0] for line in (cut / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == [str(i) for i in range(1, 7)]


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loss is checked on logged steps and before every checkpoint (never in between: it
    stays on the device); the error names the first bad step and the checkpoint kept."""
    from contrastkit.training import steps

    cfg = load_config("digits-simclr", tiny_overrides(**{"train.max_steps": 8, "train.checkpoint_every": 2,
                                                         "train.log_every": 3}))
    run = new_run_dir(cfg, str(tmp_path / "nan"), resume=False)
    real = steps.GradientStep.__call__

    def poisoned(self: Any, batch: Any, clock: Any) -> Any:
        if clock.step == 2:  # after step 2: the weights become NaN, so step 4 onwards is NaN... and step 3
            for p in self.model.parameters():
                p.data.fill_(float("nan"))
                break
        return real(self, batch, clock)

    monkeypatch.setattr(steps.GradientStep, "__call__", poisoned)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 3; the last good checkpoint \(step 2\)"):
        train_run(cfg, run, progress=False, verbose=False)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in checkpoint_part(state).values() if v.is_floating_point())


def test_progress_without_a_terminal_is_a_plain_line_every_few_seconds() -> None:
    out = io.StringIO()  # not a terminal: no carriage returns, one line per interval and one at the end
    progress = Progress(100, unit="texts", stream=out, interval=0.0)
    progress.set(loss=1.23456, lr=1e-3, rate=321.0)
    progress.update(10)
    progress.update(90)
    progress.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 3
    assert lines[0].startswith("train: step 10/100 (10%)  loss 1.2346  lr 1.00e-03  texts/s 321")
    assert lines[-1].startswith("train: step 100/100 (100%)")


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
from contrastkit.training.malloc import keep_freed_memory
for setting in sys.argv[1].split(","):  # e.g. "true,false": on, then off again in the same process
    keep_freed_memory(setting == "true")
torch.set_num_threads(1)

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
def test_freed_memory_stays_in_the_heap_for_the_next_step_and_can_be_switched_off() -> None:
    """train.keep_freed_memory (default on, set by training only): blocks below 32 MiB come from
    the heap and stay there once freed, instead of being mapped for each allocation and unmapped
    on free (glibc's default above 128 KiB), which page-faults them in again every step (1.5x
    slower recommendation steps on CPU, see contrastkit.training.malloc). Switched off later in the
    same process, glibc's defaults are back."""
    import subprocess

    grown = {}
    for keep in ("true", "false", "true,false"):
        proc = subprocess.run([sys.executable, "-c", _HEAP, keep], capture_output=True, text=True, timeout=120,
                              check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        grown[keep] = [int(v) for v in proc.stdout.split()]
    assert grown["true"][0] >= 56 and grown["true"][1] >= 56, grown  # 64 MiB in the heap, and kept there
    assert grown["false"][0] < 8, grown  # each block mapped on its own (and unmapped when freed)
    assert grown["true,false"][0] < 8, grown  # off again: glibc's thresholds
