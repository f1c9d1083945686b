"""User-facing errors: the CLI turns these into one-line messages and exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(ValueError):
    """A mistake in user input (config, data, command line); reported without a traceback."""


def closest(name: str, allowed: Iterable[str]) -> str:
    """A ' (did you mean X?)' hint for a misspelt name, or '' when nothing is close."""
    match = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def check_choice(what: str, value: str, allowed: Iterable[str]) -> str:
    """Return value if it is one of allowed, else raise UserError naming both."""
    options = sorted(allowed)
    if value not in options:
        raise UserError(
            f"unknown {what} {value!r}{closest(value, options)}; allowed: {', '.join(options)}"
        )
    return value
