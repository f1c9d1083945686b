"""Progress of a training run: a tqdm bar on a terminal; elsewhere (a log file, a CI job, a
cluster's output file) one plain line every ``interval`` seconds and one at the end, instead of
carriage-return updates that make one endless line of a log file."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """Steps done out of ``total``, with the throughput in ``unit``/s, loss and learning rate of
    the last logged step. ``enabled=False``: silent."""

    def __init__(
        self, total: int, *, initial: int = 0, unit: str = "samples", enabled: bool = True,
        stream: TextIO | None = None, interval: float = 10.0, desc: str = "train",
    ) -> None:
        self.total, self.done, self.unit, self.enabled = total, initial, unit, enabled
        self.stream = stream or sys.stderr
        self.interval, self.desc = interval, desc
        self.figures: dict[str, str] = {}
        self.start = self.last_line = time.monotonic()
        self.start_step = initial
        self.bar: tqdm | None = None
        if enabled and self.stream.isatty():
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
                            leave=True, mininterval=0.5, file=self.stream)

    def set(self, *, loss: float | None = None, lr: float | None = None, rate: float | None = None) -> None:
        """The figures of the last logged step (shown beside the count)."""
        if loss is not None:
            self.figures["loss"] = f"{loss:.4f}"
        if lr is not None:
            self.figures["lr"] = f"{lr:.2e}"
        if rate is not None:
            self.figures[f"{self.unit}/s"] = f"{rate:.0f}"
        if self.bar is not None:
            self.bar.set_postfix(self.figures, refresh=False)

    def update(self, steps: int = 1) -> None:
        self.done += steps
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(steps)
        elif time.monotonic() - self.last_line >= self.interval:
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        self.last_line = now
        share = self.done / max(self.total, 1)
        spent = now - self.start
        rate = (self.done - self.start_step) / spent if spent > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        figures = "".join(f"  {key} {value}" for key, value in self.figures.items())
        print(f"{self.desc}: step {self.done}/{self.total} ({100 * share:.0f}%){figures}  "
              f"elapsed {_duration(spent)}  eta {_duration(eta)}", file=self.stream, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        elif self.done > self.start_step:
            self._line()
