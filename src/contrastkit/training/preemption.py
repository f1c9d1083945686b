"""Stopping cleanly when a cluster stops the job: SIGTERM (SLURM, Kubernetes), SIGUSR1 (SLURM's
``--signal``) and SIGINT (Ctrl-C) ask the trainer to finish the current step, write a checkpoint
of it and exit with :data:`EXIT_PREEMPTED`; ``--resume`` then continues bit-exactly.

Under torchrun every process may get the signal at a different step: the request is agreed
on with one all-reduce per step, so all processes stop after the same step and write one
checkpoint together. A second signal while the checkpoint is written is acknowledged and
ignored: the checkpoint is written to a temporary file and renamed, never half-written.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

import torch

PREEMPT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped on request with a checkpoint; try again with --resume
EXIT_DIST_FAILURE = 76  # a process of a torchrun job died or timed out
EXIT_CHECKPOINT_WRITE = 74  # EX_IOERR: a checkpoint could not be written (the previous one is kept)


class Preempted(Exception):
    """Training stopped on a signal after writing a checkpoint of its last step."""

    def __init__(self, signum: int, step: int, total_steps: int, checkpoint: str) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signal_name = signal.Signals(signum).name
        self.step, self.total_steps, self.checkpoint = step, total_steps, checkpoint


class DistributedFailure(RuntimeError):
    """A collective failed: another process of the job died, or it timed out."""


class PreemptionHandler:
    """Context manager installing the handlers (main thread only); ``signum`` is the first
    signal received, or None."""

    def __init__(self, verbose: bool = True) -> None:
        self.signum: int | None = None
        self.verbose = verbose
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> PreemptionHandler:
        if threading.current_thread() is threading.main_thread():
            for sig in PREEMPT_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            message = f"\ncontrastkit: {name} received: finishing this step, then writing a checkpoint\n"
        else:
            message = f"\ncontrastkit: {name} received again: still writing the checkpoint, please wait\n"
        if self.verbose:
            os.write(2, message.encode())  # async-signal-safe, unlike print

    def stop_requested(self, world_size: int, device: torch.device, extra: bool = False) -> tuple[bool, bool]:
        """(signal received by any process, ``extra`` of rank 0) — one all-reduce under torchrun,
        so every process decides the same at the same step."""
        local = self.signum is not None
        if world_size == 1:
            return local, extra
        import torch.distributed as dist

        flags = torch.tensor([float(local), float(extra and dist.get_rank() == 0)], device=device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags[0].item()), bool(flags[1].item())


def is_communication_failure(exc: BaseException) -> bool:
    """Whether an exception raised under torchrun comes from a failed or timed-out collective."""
    import torch.distributed as dist

    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        word in text for word in ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "broken pipe")
    )
