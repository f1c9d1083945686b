"""Small fixed-width tables for the terminal (results of every task, comparisons)."""

from __future__ import annotations

from typing import Any


def pct(value: Any) -> str:
    """A fraction as a percentage with one decimal, '-' when missing."""
    return "-" if value is None else f"{100 * float(value):.1f}"


def format_table(headers: list[str], rows: list[list[str]], *, left: int = 1) -> str:
    """Header, a rule and the rows; the first ``left`` columns left-aligned, the rest right."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i < left else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        )

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])
