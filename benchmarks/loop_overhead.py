"""What the one training loop costs: the quickstart (SimCLR on the digits, its recipe's settings)
through :class:`contrastkit.training.Trainer` — schedule, progress, loggers (CSV + TensorBoard),
the non-finite check, callbacks (the collapse monitor), the final checkpoint — against a bare
hand-written loop over the same model, the same batches and the same optimiser (forward,
backward, step, the method's EMA update, the learning-rate schedule).

Both start from the same weights and draw the same batches, in turns (A B, B A, A B, ...), in this
process with the same threads; the figure is steps/s of the loop over steps/s of the bare loop
(the issue's target: at least 97 %), and the two end with the same weights (checked). As that
ratio moves with the machine's drift between two runs, the loop's own time is also measured
directly: its wall time less the time spent inside the step and inside batch assembly.

    python benchmarks/loop_overhead.py --steps 100 --rounds 3 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from contrastkit.recipes import load_config
from contrastkit.tasks import RunContext, get_task
from contrastkit.training import Trainer, lr_factor, setup_runtime


def build(cfg: Any, run_dir: Path) -> Any:
    setup_runtime(cfg.train)
    task = get_task(cfg.task)(cfg)
    return task.training(RunContext(cfg, run_dir, torch.device("cpu"), verbose=False))


class _Timed:
    """Wraps the loop's step and batch source: the seconds spent inside them, so that what is
    left of the loop's wall time is the loop's own (schedule, logs, loggers, checks, checkpoint)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.seconds = inner, 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)

    def __call__(self, *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.inner(*args)
        finally:
            self.seconds += time.perf_counter() - t0

    def batches(self, *args: Any) -> Any:
        it = iter(self.inner.batches(*args))
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            finally:
                self.seconds += time.perf_counter() - t0
            yield batch


def through_the_loop(cfg: Any, steps: int) -> tuple[float, dict[str, torch.Tensor], float]:
    """Steps/s through the Trainer, the weights it ends with, and the loop's own seconds per step."""
    with tempfile.TemporaryDirectory() as tmp:
        training = build(cfg, Path(tmp))
        step, batches = _Timed(training.step), _Timed(training.batches)
        training = dataclasses.replace(training, step=step, batches=batches)
        trainer = Trainer(training, Path(tmp), cfg.train, device=torch.device("cpu"), optim=cfg.optim,
                          config=cfg.to_dict(), progress=False)
        t0 = time.perf_counter()
        summary = trainer.fit()
        seconds = time.perf_counter() - t0
        assert summary.steps == steps
        own = (seconds - step.seconds - batches.seconds) / steps
        return steps / seconds, copy.deepcopy(step.inner.model.state_dict()), own


def bare(cfg: Any, steps: int) -> tuple[float, dict[str, torch.Tensor]]:
    """The same model, batches and optimiser (the loop's step object only builds them)."""
    with tempfile.TemporaryDirectory() as tmp:
        training = build(cfg, Path(tmp))
        step, loader = training.step, training.batches
        model, optimizer = step.model, step.optimizer
        base = [g["lr"] for g in optimizer.param_groups]
        o = cfg.optim
        done, epoch = 0, 0
        t0 = time.perf_counter()
        while done < steps:
            for batch in loader.batches(epoch):
                factor = lr_factor(done / steps, o.warmup_fraction, o.schedule, o.final_lr_fraction)
                for group, lr in zip(optimizer.param_groups, base, strict=True):
                    group["lr"] = lr * factor
                loss = model.training_step(batch).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                model.on_step_end(done, steps)
                done += 1
                if done == steps:
                    break
            epoch += 1
        seconds = time.perf_counter() - t0
        return steps / seconds, copy.deepcopy(model.state_dict())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON file for the figures")
    args = parser.parse_args()
    cfg = load_config(None, [f"train.max_steps={args.steps}", f"train.num_threads={args.threads}",
                             "train.progress=false"])
    loop, plain, ratios, owns = [], [], [], []
    for r in range(args.rounds):
        if r % 2 == 0:  # A B, then B A: neither goes first every time
            a, wa, own = through_the_loop(cfg, args.steps)
            b, wb = bare(cfg, args.steps)
        else:
            b, wb = bare(cfg, args.steps)
            a, wa, own = through_the_loop(cfg, args.steps)
        owns.append(own)
        same = all(torch.equal(wa[k], wb[k]) for k in wa)
        loop.append(a)
        plain.append(b)
        ratios.append(a / b)
        print(f"round {r + 1}: loop {a:.2f} steps/s, bare {b:.2f} steps/s, loop/bare {a / b:.3f}, "
              f"loop's own time {1000 * own:.2f} ms/step ({100 * own * a:.2f} % of a step), same weights: {same}", flush=True)
    result = {
        "steps": args.steps, "threads": args.threads, "loop_steps_per_s": statistics.median(loop),
        "bare_steps_per_s": statistics.median(plain), "ratio_median": statistics.median(ratios),
        "ratios": ratios, "loop_own_ms_per_step": 1000 * statistics.median(owns),
        "loop_own_share": statistics.median(o * a for o, a in zip(owns, loop, strict=True)), "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
