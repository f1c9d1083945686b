"""HTML pieces of the report: every value escaped, numbers written one way (:func:`fmt_number`),
nested JSON rendered generically as tables so that no value of a results file is left out."""

from __future__ import annotations

import html
from typing import Any

from contrastkit.training.loggers import flatten_dict

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto;
       max-width: 1200px; padding: 0 16px; color: #1d2327; }
h1 { font-size: 24px; } h2 { font-size: 20px; border-bottom: 2px solid #ccd; padding-bottom: 4px; margin-top: 40px; }
h3 { font-size: 16px; margin-top: 24px; } h4 { font-size: 14px; margin: 16px 0 6px; }
table { border-collapse: collapse; margin: 4px 0 12px; font-size: 13px; }
th, td { border: 1px solid #d5d8dc; padding: 3px 7px; vertical-align: top; text-align: left; }
thead th { background: #eef1f4; } tbody th { background: #f7f8f9; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.matrix td { padding: 1px 5px; font-size: 12px; }
pre { background: #f6f8fa; border: 1px solid #e1e4e8; padding: 10px; overflow-x: auto; font-size: 12.5px; }
.scroll { overflow-x: auto; max-width: 100%; }
img { max-width: 100%; border: 1px solid #e1e4e8; margin: 4px 0 12px; }
.note { color: #8a5300; } .muted { color: #6a737d; } .diff { background: #fff5d6; }
nav a { margin-right: 14px; } details > summary { cursor: pointer; margin: 8px 0; }
"""


def esc(value: Any) -> str:
    """Text as HTML (quotes too: safe in attributes)."""
    return html.escape(str(value), quote=True)


def fmt_number(value: Any) -> str:
    """How the report writes a scalar: integers as they are, other numbers with four significant
    digits (one decimal from 1000 on), booleans true / false, null as '–', text as it is."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _cell(value: Any, tag: str = "td") -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    css = ' class="num"' if numeric else ""
    body = esc(fmt_number(value)) if is_scalar(value) else render(value)
    return f"<{tag}{css}>{body}</{tag}>"


def table(headers: list[Any] | None, rows: list[list[Any]], *, row_headers: bool = True, css: str = "") -> str:
    """A table of values (each cell rendered with :func:`render`); the first cell of a row is
    its header when ``row_headers``."""
    head = "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead>" if headers else ""
    body = []
    for row in rows:
        cells = [f"<th>{esc(row[0])}</th>", *map(_cell, row[1:])] if row_headers else [*map(_cell, row)]
        body.append("<tr>" + "".join(cells) + "</tr>")
    cls = f' class="{css}"' if css else ""
    return f"<table{cls}>{head}<tbody>{''.join(body)}</tbody></table>"


def render(value: Any) -> str:
    """Any JSON value as HTML: scalars as text; lists of numbers inline, lists of lists as a
    matrix, lists of mappings as a table with one column per key; a mapping whose values are
    all mappings side by side (one column each, nested keys dotted), any other mapping as a
    key / value table."""
    if is_scalar(value):
        return esc(fmt_number(value))
    if isinstance(value, list | tuple):
        items = list(value)
        if not items:
            return "[]"
        if all(is_scalar(v) for v in items):
            return esc(", ".join(fmt_number(v) for v in items))
        if all(isinstance(v, list) and all(is_scalar(x) for x in v) for v in items):
            return table(None, [list(v) for v in items], row_headers=False, css="matrix")
        if all(isinstance(v, dict) for v in items):
            keys = list(dict.fromkeys(k for v in items for k in v))
            return table(keys, [[v.get(k, "") for k in keys] for v in items], row_headers=False)
        return "<ol>" + "".join(f"<li>{render(v)}</li>" for v in items) + "</ol>"
    if isinstance(value, dict):
        if not value:
            return "(empty)"
        if len(value) >= 2 and all(isinstance(v, dict) and v for v in value.values()):
            columns = {str(k): flatten_dict(v) for k, v in value.items()}
            keys = list(dict.fromkeys(k for flat in columns.values() for k in flat))
            rows = [[k, *(flat.get(k, "") for flat in columns.values())] for k in keys]
            return table(["", *columns], rows)
        return table(None, [[k, v] for k, v in value.items()])
    return esc(value)


def page(title: str, body: str) -> str:
    """The whole self-contained document: inline CSS, no script, nothing fetched."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
