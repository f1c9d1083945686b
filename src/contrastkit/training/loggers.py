"""Experiment trackers behind one interface: ``train.loggers: [csv, tensorboard, mlflow, wandb]``.

The trainer calls every configured :class:`Logger` the same way, in rank 0 only:
``log_params(config)`` when training starts or resumes, ``log_metrics(step, values)`` every
``train.log_every`` steps and ``close(status)`` at the end ("finished", "killed" after a
preemption signal, "failed"). Each continues correctly on ``--resume``:

- ``csv``: RUN_DIR/train_log.csv; rows after the checkpoint are dropped (they are redone).
- ``tensorboard``: RUN_DIR/tensorboard/; events after the checkpoint are purged (``purge_step``:
  the first step redone, so the checkpoint's own step is kept).
- ``mlflow``: MLFLOW_TRACKING_URI, else a local file store RUN_DIR/mlruns (experiment
  MLFLOW_EXPERIMENT_NAME, default "contrastkit"); the run id is kept in RUN_DIR/trackers.json
  and the same run continues, without logging again the steps it already has. mlflow params
  cannot change: a value changed on resume keeps its first value there.
- ``wandb``: mode from WANDB_MODE (``offline`` needs no account; ``wandb sync`` uploads later),
  project WANDB_PROJECT (default "contrastkit"), files in RUN_DIR/wandb; the run id is kept in
  RUN_DIR/trackers.json and resumed.

A tracker that fails in the middle of training is turned off with a one-line warning: logging
never stops a training run.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import time
import uuid
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from contrastkit.errors import UserError, install_hint

LOG_FIELDS = ["step", "epoch", "loss", "lr"]  # then the throughput (<unit>_per_sec), elapsed_sec, the rest
TRACKERS_FILE = "trackers.json"
_MODULES = {"mlflow": "mlflow", "wandb": "wandb"}  # logger → module it needs beyond the core


class Logger(Protocol):
    """One destination of the training logs."""

    def log_params(self, config: dict[str, Any]) -> None:
        """The run's whole config (nested sections), once per start or resume."""

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """The values of one log row (loss, lr, throughput, the method's logs) at ``step``."""

    def close(self, status: str = "finished") -> None:
        """Flush and release; ``status`` is "finished", "killed" or "failed"."""


def flatten_dict(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys (lists and scalars are the leaves)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten_dict(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_installed(names: list[str]) -> None:
    """A one-line error for a configured tracker whose package is missing."""
    for name in names:
        module = _MODULES.get(name)
        if module and importlib.util.find_spec(module) is None:
            raise UserError(f"train.loggers: {name} is not installed; {install_hint('trackers')}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


# ----------------------------------------------------------------------------- the run folder's ids


def read_tracker_ids(run_dir: Path) -> dict[str, Any]:
    """RUN_DIR/trackers.json: the mlflow / wandb run ids of this run folder ({} when none)."""
    path = Path(run_dir) / TRACKERS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_tracker_id(run_dir: Path, name: str, entry: dict[str, Any]) -> None:
    data = {**read_tracker_ids(run_dir), name: entry}
    path = Path(run_dir) / TRACKERS_FILE
    tmp = path.with_name(f".{TRACKERS_FILE}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


# ----------------------------------------------------------------------------- csv


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _write_csv(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    """Replace ``path`` at once (a kill while writing leaves the old file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def truncate_csv(path: Path, step: int) -> list[str]:
    """Drop the rows of a log CSV (with a ``step`` column) after ``step``: after a resume those
    steps are redone. Returns its columns ([] when there is no file)."""
    if not path.is_file():
        return []
    fields, rows = _read_csv(path)
    kept = [r for r in rows if (r.get("step") or "").isdigit() and int(r["step"]) <= step]
    if len(kept) < len(rows):
        _write_csv(path, fields, kept)
    return fields


def order_columns(keys: list[str]) -> list[str]:
    """step, epoch, loss, lr, the throughput (``<unit>_per_sec``), elapsed_sec, then the rest A-Z."""
    rates = sorted(k for k in keys if k.endswith("_per_sec"))
    first = [k for k in [*LOG_FIELDS, *rates, "elapsed_sec"] if k in keys]
    return first + sorted(k for k in keys if k not in first)


class CsvLogger:
    """train_log.csv: one row per log step. A key that first shows up on a later row (an RL
    run's loss once learning starts) widens the header; the earlier rows leave it empty."""

    def __init__(self, path: Path, start_step: int) -> None:
        self.path = path
        self.fields: list[str] = truncate_csv(path, start_step) if path.exists() else []

    def log_params(self, config: dict[str, Any]) -> None:
        """Nothing: the config is the run folder's config.yaml."""

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **metrics}
        if not self.path.exists():
            self.fields = order_columns(list(row))
            _write_csv(self.path, self.fields, [row])
            return
        if not self.fields:
            self.fields = _read_csv(self.path)[0]
        if any(key not in self.fields for key in row):
            self.fields = order_columns(list(dict.fromkeys([*self.fields, *row])))
            _write_csv(self.path, self.fields, [*_read_csv(self.path)[1], row])
            return
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.fields).writerow(row)

    def close(self, status: str = "finished") -> None:
        """Nothing to release: every row is appended and closed at once."""


# ----------------------------------------------------------------------------- tensorboard


class TensorBoardLogger:
    """Scalars ``train/<key>`` in RUN_DIR/tensorboard."""

    def __init__(self, log_dir: Path, start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # events from the first step that is redone on (``start_step + 1``) are hidden as stale
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=start_step + 1)

    def log_params(self, config: dict[str, Any]) -> None:
        """Nothing: the config is the run folder's config.yaml."""

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(f"train/{key}", value, step)

    def close(self, status: str = "finished") -> None:
        self.writer.close()


# ----------------------------------------------------------------------------- mlflow

_MLFLOW_STATUS = {"finished": "FINISHED", "killed": "KILLED", "failed": "FAILED"}
_MLFLOW_KEY = re.compile(r"[^\w\-. :/]")  # characters mlflow does not take in a metric name


class MlflowLogger:
    """Params and ``train/<key>`` metrics of one mlflow run, continued on resume."""

    def __init__(self, run_dir: Path, start_step: int) -> None:
        from mlflow import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (Path(run_dir) / "mlruns").resolve().as_uri()
            # mlflow >= 3.x refuses file stores unless asked (its database store needs sqlalchemy,
            # which mlflow-skinny leaves out); a local store in the run folder is what we want here
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        self.logged_until = -1  # steps up to this one are in the run already (resume)
        stored = read_tracker_ids(run_dir).get("mlflow", {})
        run_id = stored.get("run_id") if stored.get("tracking_uri") == uri else None
        if run_id:
            try:
                self.client.update_run(run_id, status="RUNNING")
                self.logged_until = self._last_step(run_id)
            except Exception as exc:  # deleted meanwhile, say: log to a new run
                warnings.warn(f"mlflow run {run_id} of this run folder could not be continued "
                              f"({_first_line(exc)}); logging to a new mlflow run", RuntimeWarning, stacklevel=2)
                run_id = None
        if not run_id:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "contrastkit"
            experiment = self.client.get_experiment_by_name(name)
            exp_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
            run = self.client.create_run(exp_id, run_name=Path(run_dir).resolve().name,
                                         tags={"contrastkit.run_dir": str(Path(run_dir).resolve())})
            run_id = run.info.run_id
            _save_tracker_id(run_dir, "mlflow", {"run_id": run_id, "tracking_uri": uri})
        self.run_id: str = run_id
        self.resumed = start_step > 0 or self.logged_until >= 0

    def _last_step(self, run_id: str) -> int:
        keys = self.client.get_run(run_id).data.metrics
        return max((m.step for key in keys for m in self.client.get_metric_history(run_id, key)), default=-1)

    def log_params(self, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        have = self.client.get_run(self.run_id).data.params if self.resumed else {}
        params = [
            Param(key, (value if isinstance(value, str) else json.dumps(value))[:500])
            for key, value in flatten_dict(config).items()
            if key not in have
        ]
        for i in range(0, len(params), 100):  # mlflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        if step <= self.logged_until:
            return
        now = int(time.time() * 1000)
        rows = [Metric("train/" + _MLFLOW_KEY.sub("_", k), float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=rows)

    def close(self, status: str = "finished") -> None:
        self.client.set_terminated(self.run_id, status=_MLFLOW_STATUS.get(status, "FINISHED"))


# ----------------------------------------------------------------------------- wandb


class WandbLogger:
    """Config and ``train/<key>`` history of one W&B run (files in RUN_DIR/wandb), resumed by id."""

    def __init__(self, run_dir: Path, start_step: int) -> None:
        import wandb

        run_id = read_tracker_ids(run_dir).get("wandb", {}).get("id") or uuid.uuid4().hex[:8]
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "contrastkit",
            dir=str(run_dir),
            id=run_id,
            name=Path(run_dir).resolve().name,
            resume="allow",
            settings=wandb.Settings(console="off"),  # leave stdout / the progress bar alone
        )
        _save_tracker_id(run_dir, "wandb", {"id": run_id})

    def log_params(self, config: dict[str, Any]) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if step < self.run.step:  # already in the resumed run (wandb refuses going back)
            return
        self.run.log({f"train/{k}": v for k, v in metrics.items()}, step=step)

    def close(self, status: str = "finished") -> None:
        if status == "killed":
            self.run.mark_preempting()
        self.run.finish(exit_code=0 if status == "finished" else 1)


# ----------------------------------------------------------------------------- all of them


def _open(name: str, run_dir: Path, start_step: int) -> Logger | None:
    if name == "csv":
        return CsvLogger(run_dir / "train_log.csv", start_step)
    if name == "tensorboard":
        try:
            return TensorBoardLogger(run_dir / "tensorboard", start_step)
        except ImportError:
            warnings.warn("tensorboard is not installed: train.loggers tensorboard is skipped", RuntimeWarning,
                          stacklevel=3)
            return None
    try:
        return MlflowLogger(run_dir, start_step) if name == "mlflow" else WandbLogger(run_dir, start_step)
    except ImportError:
        raise UserError(f"train.loggers: {name} is not installed; {install_hint('trackers')}") from None
    except Exception as exc:
        hint = "; set WANDB_MODE=offline to log without an account" if name == "wandb" else ""
        raise UserError(f"train.loggers: {name} could not start ({_first_line(exc)}){hint}") from None


class Loggers:
    """The configured loggers of a run, called together; a context manager that closes them
    with ``status`` ("failed" when an exception leaves the block)."""

    def __init__(self, loggers: list[tuple[str, Logger]]) -> None:
        self.loggers = loggers
        self.status = "finished"

    @classmethod
    def open(cls, names: list[str], run_dir: Path, *, start_step: int, config: dict[str, Any]) -> Loggers:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        opened = cls([])
        try:
            for name in names:
                logger = _open(name, run_dir, start_step)
                if logger is not None:
                    opened.loggers.append((name, logger))
        except BaseException:
            opened.close("failed")
            raise
        if config:
            opened._each("log_params", config)
        return opened

    def _each(self, what: str, *args: Any) -> None:
        for entry in list(self.loggers):
            name, logger = entry
            try:
                getattr(logger, what)(*args)
            except Exception as exc:
                self.loggers.remove(entry)
                warnings.warn(f"train.loggers: {name} failed ({_first_line(exc)}); it is off for the rest of "
                              "this run", RuntimeWarning, stacklevel=3)

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self._each("log_metrics", step, {k: v for k, v in metrics.items() if k != "step"})

    def close(self, status: str) -> None:
        self._each("close", status)
        self.loggers = []

    def __enter__(self) -> Loggers:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close(self.status if kind is None else "failed")
