"""``contrastkit train ... --nproc N``: run the same command in N processes on this machine with
PyTorch's elastic launcher (what ``torchrun --standalone`` does), from this process.

What it adds to torchrun: preemption signals (SIGTERM, SIGINT, SIGUSR1) reach every worker,
which then stops after its current step with a checkpoint; a failed worker ends the job with
one line saying which process failed and how to resume, instead of torchrun's report.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from typing import Any

from contrastkit.errors import UserError
from contrastkit.training.preemption import EXIT_DIST_FAILURE, EXIT_PREEMPTED

FORWARDED = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
LAUNCHED = "CONTRASTKIT_LAUNCHED"


def _failure_line(failures: dict[int, Any], resume: str) -> tuple[str | None, int]:
    """One line and the exit code for the failed workers of a job."""
    codes = {rank: int(getattr(f, "exitcode", 1)) for rank, f in failures.items()}
    if codes and all(code == EXIT_PREEMPTED for code in codes.values()):
        return None, EXIT_PREEMPTED  # rank 0 has said how to resume
    killed = {rank: -code for rank, code in codes.items() if code < 0}
    if killed:
        # the culprit: a process killed by something else than the launcher's own SIGTERM
        rank, sig = min(killed.items(), key=lambda item: (item[1] == signal.SIGTERM, item[0]))
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        return (
            f"process {rank} of the job was killed ({name}); the others stopped; resume from the last "
            f"checkpoint with: {resume}",
            EXIT_DIST_FAILURE,
        )
    if codes and all(code in (EXIT_DIST_FAILURE, EXIT_PREEMPTED) for code in codes.values()):
        return f"a process of the job stopped; resume from the last checkpoint with: {resume}", EXIT_DIST_FAILURE
    rank, code = min(codes.items()) if codes else (0, 1)
    return None, code  # the worker printed its own error (one line for a user mistake)


def launch(nproc: int, argv: list[str], resume_command: str) -> int:
    """Run ``contrastkit ARGV`` in ``nproc`` local processes; returns the job's exit code."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {nproc}")
    logs = tempfile.TemporaryDirectory(prefix="contrastkit-torchrun-")  # torchrun's own log folder, removed after
    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", f"--log-dir={logs.name}", "-m", "contrastkit", *argv]
    )
    saved_env = os.environ.get("TORCHELASTIC_SIGNALS_TO_HANDLE")
    saved_handlers = {
        s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1)
    }
    quiet = [
        logging.getLogger(name)
        for name in ["torch.distributed.run", *logging.root.manager.loggerDict]
        if name.startswith(("torch.distributed.elastic", "torch.distributed.run"))
    ]
    saved_levels = [log.level for log in quiet]
    os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = FORWARDED
    os.environ[LAUNCHED] = "1"  # workers leave the report of a failed job to this launcher
    for log in quiet:  # torchrun's notices and failure logs: the workers and this launcher report
        log.setLevel(logging.CRITICAL)
    try:
        run(args)
        return 0
    except SignalException:  # forwarded to the workers: they wrote a checkpoint and said so
        return EXIT_PREEMPTED
    except ChildFailedError as exc:
        line, code = _failure_line(exc.failures, resume_command)
        if line:
            print(f"contrastkit: {line}", file=sys.stderr)
        return code
    finally:
        logs.cleanup()
        os.environ.pop(LAUNCHED, None)
        if saved_env is None:
            os.environ.pop("TORCHELASTIC_SIGNALS_TO_HANDLE", None)
        else:
            os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = saved_env
        for sig, handler in saved_handlers.items():
            signal.signal(sig, handler)
        for log, level in zip(quiet, saved_levels, strict=True):
            log.setLevel(level)
