"""The report of one run folder, or several side by side: what each section holds and where it
comes from (config.yaml, results.json, train_log.csv and the other *_log.csv, plots/*.png)."""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from contrastkit.errors import UserError
from contrastkit.report import figures
from contrastkit.report.html import esc, page, render, table
from contrastkit.runs import CONFIG_FILE, RESULTS_FILE
from contrastkit.training.loggers import flatten_dict
from contrastkit.version import __version__

REPORT_FILE = "report.html"
DIAGNOSTIC_COLUMNS = ("eff_rank", "emb_std", "uniformity", "alignment", "pos_cos")
DIAGNOSTICS_NOTE = (
    "A healthy representation has std ~ 1 (per-dimension spread of the normalised embeddings "
    "times sqrt(dim); 0 when collapsed to a point), an effective rank well above 1 and a "
    "uniformity well below 0."
)


@dataclass
class RunFiles:
    """What a run folder holds, read once; ``notes`` say what it lacks."""

    path: Path
    label: str
    config_text: str
    config: dict[str, Any]
    results: dict[str, Any]
    logs: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)  # CSV stem → columns
    notes: list[str] = field(default_factory=list)

    @property
    def task_name(self) -> str:
        return str(self.config.get("task", "image"))

    @property
    def method(self) -> str:
        method = self.config.get("method")
        return str(method.get("name", "?")) if isinstance(method, dict) else "?"

    @property
    def eval(self) -> dict[str, Any] | None:
        ev = self.results.get("eval")
        return ev if isinstance(ev, dict) else None

    @property
    def train_log(self) -> dict[str, list[float | None]]:
        return self.logs.get("train_log", {})


def read_run_files(path: Path, label: str, results: dict[str, Any] | None = None) -> RunFiles:
    """Read a run folder (``results``: use these instead of its results.json). A one-line error
    when the folder is missing or is no run; anything else missing becomes a note."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"run folder {str(path)!r} does not exist" if not path.exists()
                        else f"{str(path)!r} is not a folder; give a run folder (with {CONFIG_FILE})")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise UserError(f"{str(path)!r} is not a contrastkit run folder (no {CONFIG_FILE})")
    text = config_path.read_text(errors="replace")
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        raise UserError(f"{str(config_path)!r} is not valid YAML; was the run folder edited?") from None
    if not isinstance(config, dict):
        raise UserError(f"{str(config_path)!r} is not a mapping of config sections")
    run = RunFiles(path, label, text, config, results or {})
    results_path = path / RESULTS_FILE
    if results is None and results_path.is_file():
        try:
            run.results = json.loads(results_path.read_text())
        except ValueError as exc:
            run.notes.append(f"{RESULTS_FILE} could not be read ({exc})")
    elif results is None:
        run.notes.append(f"no {RESULTS_FILE}: training did not finish (interrupted, or still running)")
    if run.results and "eval" not in run.results:
        run.notes.append("not evaluated (contrastkit evaluate RUN_DIR evaluates it)")
    for csv_path in sorted(path.glob("*_log.csv")):
        try:
            run.logs[csv_path.stem] = figures.read_columns(csv_path)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            run.notes.append(f"{csv_path.name} could not be read ({exc})")
    if "train_log" not in run.logs:
        run.notes.append("no train_log.csv (train.loggers without csv, or no step logged yet)")
    return run


def _task(run: RunFiles) -> Any:
    """The run object of the folder (its task's headline and results table), or None when the
    folder's config cannot be read by this contrastkit."""
    from contrastkit.recipes import config_from_dict
    from contrastkit.tasks import get_task

    try:
        cfg = config_from_dict(run.config, saved=True)
        return get_task(cfg.task)(cfg).load(run.path)
    except Exception:
        return None


def _last_step(run: RunFiles) -> float | None:
    steps = [s for s in run.train_log.get("step", []) if s is not None]
    return max(steps) if steps else None


def _status(run: RunFiles) -> str:
    if not run.results:
        step = _last_step(run)
        return "interrupted" + (f" (last logged step {step:.0f})" if step is not None else "")
    stopped = (run.results.get("train") or {}).get("stopped_by")
    return ("trained" + (f" (stopped by {stopped})" if stopped else "")
            + (", evaluated" if run.eval is not None else ", not evaluated"))


def _img(png: bytes | None, alt: str) -> str:
    return f'<img src="{figures.data_uri(png)}" alt="{esc(alt)}">' if png else ""


# ----------------------------------------------------------------------------- one run


def _summary(run: RunFiles, task: Any) -> str:
    facts = [["folder", str(run.path)], ["task", run.task_name], ["method", run.method],
             ["recipe", run.config.get("name", "?")], ["status", _status(run)]]
    out = [table(None, facts)]
    out += [f'<p class="note">{esc(note)}</p>' for note in run.notes]
    if task is not None and isinstance(run.results.get("train"), dict):
        with contextlib.suppress(Exception):  # a partial results.json: the tables below show it
            out.append(f"<p>{esc(task.headline(run.results))}</p>")
    return "".join(out)


def _curves(run: RunFiles) -> str:
    out = []
    for stem, columns in run.logs.items():
        png = figures.curves(columns, f"{stem}.csv")
        out.append(_img(png, f"curves of {stem}.csv"))
    return "".join(out)


def _evaluation(run: RunFiles, task: Any) -> str:
    ev = run.eval
    if ev is None:
        return '<p class="muted">no evaluation in results.json</p>'
    out = []
    if task is not None:
        try:
            out.append(f"<h4>{esc('results against the baselines')}</h4><pre>{esc(task.results_table(ev))}</pre>")
        except Exception as exc:
            out.append(f'<p class="note">the task\'s results table could not be made ({esc(exc)})</p>')
    out.append(_image_figures(ev))
    out.append("<h4>every value of results.json's eval</h4>")
    counts: list[tuple[str, Any]] = []
    for key, value in ev.items():
        out.append(f"<h4>eval.{esc(key)}</h4>{render(_without_confusion(value, f'eval.{key}', counts))}")
    if counts:  # the heat maps' numbers, folded away (a 10 x 10 grid per probe would fill the page)
        rows = "".join(f"<h4>{esc(where)}</h4>{render(matrix)}" for where, matrix in counts)
        out.append(f'<details><summary>confusion matrices as counts (rows: true class, columns: predicted)</summary>'
                   f'<div class="scroll">{rows}</div></details>')
    return "".join(out)


def _without_confusion(value: Any, where: str, counts: list[tuple[str, Any]]) -> Any:
    """``value`` less its ``confusion`` matrices, which go to ``counts`` with where they were."""
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key == "confusion" and isinstance(item, list):
            counts.append((f"{where}.{key}", item))
        else:
            out[key] = _without_confusion(item, f"{where}.{key}", counts)
    return out


def _image_figures(ev: dict[str, Any]) -> str:
    """An image run's pictures of its evaluation: accuracy of every probe against the baselines
    as bars, and the confusion matrices of each encoder's probes as heat maps with class names."""
    encoders = ev.get("encoders")
    if not isinstance(encoders, dict) or not all(isinstance(r, dict) for r in encoders.values()):
        return ""
    out = []
    png = figures.accuracy_bars(encoders)
    if png:
        out.append(_img(png, "accuracy against the baselines"))
    names = ev.get("class_names") if isinstance(ev.get("class_names"), list) else None
    for name, result in encoders.items():
        matrices = {label: result[key]["confusion"] for key, label in figures.PROBES
                    if isinstance(result.get(key), dict) and "confusion" in result[key]}
        png = figures.confusion_heatmaps(matrices, names, f"confusion on the test split: {name}")
        if png:
            out.append(_img(png, f"confusion matrices of {name}"))
    return "".join(out)


def _pictures(run: RunFiles) -> str:
    """The run's own pictures (embedding map, neighbour grid, ...); its training-curve PNG only
    when the report has no curves of its own."""
    out = []
    for png in sorted((run.path / "plots").glob("*.png")):
        if png.stem == "training_curves" and run.train_log:
            continue
        out.append(f"<figure>{_img(png.read_bytes(), png.stem)}<figcaption>{esc(png.stem.replace('_', ' '))}"
                   "</figcaption></figure>")
    return "".join(out)


def _monitor(run: RunFiles) -> str:
    """The validation curve measured while training (results.json's ``validation``, any task; an
    older image run's ``monitor``)."""
    val = run.results.get("validation") or run.results.get("monitor")
    if not isinstance(val, dict) or not isinstance(val.get("curve"), list) or len(val["curve"]) < 2:
        return ""
    metric = str(val.get("metric", "validation"))
    if "bank" in val:  # the image task's kNN monitor
        what = (f"kNN accuracy on {val.get('val')} images of the validation split against {val.get('bank')} "
                f"training images, every {val.get('every')} steps")
        title = "validation accuracy while training"
    else:
        every = f", every {val['every']} steps" if val.get("every") else ""
        what = f"{metric} on the validation data ({val.get('direction', 'max')} is better){every}"
        title = f"{metric} while training"
    png = (figures.monitor_curve(val["curve"], title) if "bank" in val
           else figures.monitor_curve(val["curve"], title, ylabel=metric, scale=1))
    return f'<p>{esc(what)}</p>{_img(png, title)}' if png else ""


def _diagnostics(run: RunFiles) -> str:
    out = []
    ev_diag = (run.eval or {}).get("diagnostics")
    if ev_diag:
        out.append(f"<h4>evaluation embeddings</h4>{render(ev_diag)}")
    rows = []
    for key in DIAGNOSTIC_COLUMNS:
        values = [v for v in run.train_log.get(key, []) if v is not None]
        if values:
            rows.append([key, values[0], values[-1], min(values), max(values)])
    if rows:
        out.append("<h4>during training (train_log.csv)</h4>" + table(["", "first", "last", "min", "max"], rows))
    train = run.results.get("train") or {}
    if isinstance(train, dict) and "collapsed_at_step" in train:
        at = train["collapsed_at_step"]
        out.append(f"<p>{'no collapse detected during training' if at is None else f'collapsed at step {at}'}</p>")
    return "".join(out) + f'<p class="muted">{esc(DIAGNOSTICS_NOTE)}</p>' if out else ""


def run_section(run: RunFiles, anchor: str) -> str:
    task = _task(run)
    details = {k: v for k, v in run.results.items() if k not in ("config", "eval", "run_dir")}
    sections = [
        ("summary", _summary(run, task)),
        ("training curves", _curves(run)),
        ("validation while training", _monitor(run)),
        ("evaluation", _evaluation(run, task) if run.results else ""),
        ("embedding map and neighbours", _pictures(run)),
        ("collapse diagnostics", _diagnostics(run)),
        ("training record (results.json)", render(details) if details else ""),
        (f"config ({CONFIG_FILE})", f"<pre>{esc(run.config_text)}</pre>"),
    ]
    body = "".join(f"<h3>{esc(title)}</h3>{html}" for title, html in sections if html)
    return f'<section id="{esc(anchor)}"><h2>{esc(run.label)}</h2>{body}</section>'


# ----------------------------------------------------------------------------- several runs

HEADLINE = re.compile(r"^(accuracy|mean|spearman|pearson|eff_rank|emb_std|uniformity|(recall|ndcg)@\d+)$")
TRAIN_KEYS = ("steps", "epochs_done", "final_loss", "seconds", "throughput", "unit", "images_per_sec", "stopped_by")


def headline_values(run: RunFiles) -> dict[str, Any]:
    """The numbers a comparison shows for a run: training summary and headline evaluation
    metrics (accuracies, probe means, correlations, recall / NDCG @ K on the test split,
    collapse diagnostics)."""
    values: dict[str, Any] = {"task": run.task_name, "method": run.method, "status": _status(run)}
    train = run.results.get("train")
    if isinstance(train, dict):
        values.update({f"train.{k}": train[k] for k in TRAIN_KEYS if k in train})
    for key, value in flatten_dict(run.eval or {}).items():
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        parts = key.split(".")
        if numeric and HEADLINE.match(parts[-1]) and not {"valid", "validation"} & set(parts):
            values[f"eval.{key}"] = value
    return values


def comparison(runs: list[RunFiles]) -> str:
    labels = [r.label for r in runs]
    heads = [headline_values(r) for r in runs]
    keys = list(dict.fromkeys(k for h in heads for k in h))
    out = ["<h3>headline metrics</h3>", table(["", *labels], [[k, *(h.get(k, "") for h in heads)] for k in keys])]
    configs = [flatten_dict(r.config) for r in runs]
    missing = object()
    differing = [k for k in dict.fromkeys(k for c in configs for k in c)
                 if len({json.dumps(c.get(k, missing), default=str) for c in configs}) > 1]
    out.append("<h3>config differences</h3>")
    if differing:
        rows = [[k, *(c.get(k, "(not set)") for c in configs)] for k in differing]
        out.append(table(["key", *labels], rows))
    else:
        out.append("<p>the configs are identical</p>")
    losses = {r.label: figures.series(r.train_log, "step", "loss") for r in runs if {"step", "loss"} <= set(r.train_log)}
    png = figures.overlay(losses, "training loss")
    if png:
        out.append("<h3>training loss</h3>" + _img(png, "training loss of every run"))
    return '<section id="comparison"><h2>comparison</h2>' + "".join(out) + "</section>"


# ----------------------------------------------------------------------------- the page


def build_html(runs: list[RunFiles]) -> str:
    title = f"contrastkit report: {runs[0].label}" if len(runs) == 1 else f"contrastkit report: {len(runs)} runs"
    head = [f"<h1>{esc(title)}</h1>",
            f'<p class="muted">written {datetime.now():%Y-%m-%d %H:%M} by contrastkit {esc(__version__)}</p>']
    if len(runs) > 1:
        links = "".join(f'<a href="#run-{i}">{esc(r.label)}</a>' for i, r in enumerate(runs, 1))
        head += [f'<nav><a href="#comparison">comparison</a>{links}</nav>', comparison(runs)]
    sections = [run_section(r, f"run-{i}") for i, r in enumerate(runs, 1)]
    return page(title, "\n".join([*head, *sections]))


def _labels(paths: list[Path]) -> list[str]:
    names = [p.resolve().name for p in paths]
    return [n if names.count(n) == 1 else str(p) for n, p in zip(names, paths, strict=True)]


def write_report(run_dirs: list[Path], out: Path | None = None, *, results: dict[str, Any] | None = None) -> Path:
    """Write the report of ``run_dirs`` to ``out`` (default for one run: RUN_DIR/report.html);
    ``results`` stands in for a single run's results.json. Returns the path written."""
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise UserError("give at least one run folder")
    seen = [p.resolve() for p in paths]
    for i, p in enumerate(seen):
        if p in seen[:i]:
            raise UserError(f"run folder {str(paths[i])!r} is listed twice")
    if out is None:
        if len(paths) > 1:
            raise UserError("a report of several runs needs --out FILE (e.g. --out report.html)")
        out = paths[0] / REPORT_FILE
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {str(out)!r} is a folder; give a file name such as {out / REPORT_FILE}")
    given = results if len(paths) == 1 else None
    runs = [read_run_files(p, label, given) for p, label in zip(paths, _labels(paths), strict=True)]
    text = build_html(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
