"""``contrastkit report RUN_DIR [RUN_DIR ...] --out report.html``: one self-contained HTML page
(inline CSS, pictures as data URIs, nothing fetched from the network) about one run or several.

Per run: summary and status, training curves of every ``*_log.csv``, the task's results table
against its baselines and every value of results.json's ``eval`` as tables, the run's pictures
(embedding map, neighbour grid), collapse diagnostics, the training record and the config. With
several runs, first a comparison: headline metrics side by side, the config keys that differ,
the training loss of every run. A run missing files (interrupted, not evaluated) gets a report
of what it has. ``train`` writes RUN_DIR/report.html after evaluation, ``evaluate`` refreshes it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from contrastkit.report.build import REPORT_FILE, build_html, read_run_files, write_report
from contrastkit.report.html import fmt_number

__all__ = ["REPORT_FILE", "build_html", "fmt_number", "read_run_files", "refresh_run_report", "write_report"]


def refresh_run_report(run_dir: Path, results: dict[str, Any] | None = None, *, verbose: bool = True) -> Path | None:
    """(Re)write RUN_DIR/report.html; a failure is one warning line, never an exception (a
    report must not cost a training run). ``results``: in place of the run's results.json."""
    try:
        path = write_report([Path(run_dir)], results=results)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        warnings.warn(f"could not write {Path(run_dir) / REPORT_FILE}: {text[0] if text else type(exc).__name__}",
                      RuntimeWarning, stacklevel=2)
        return None
    if verbose:
        print(f"report:  {path}", flush=True)
    return path
