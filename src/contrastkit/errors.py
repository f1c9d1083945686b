"""User-facing errors: the CLI turns these into one-line messages and exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


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


def install_hint(*extras: str) -> str:
    """The pip command that installs optional extras, in the form that fits this installation:
    ``pip install -e ".[text]"`` when contrastkit runs from its source checkout (an editable
    install, or the ``src`` folder on the path; the path is spelt out when the working folder is
    not the checkout), ``pip install 'contrastkit[text]'`` for a wheel."""
    names = ",".join(extras)
    root = _checkout()
    if root is None:
        return f"pip install 'contrastkit[{names}]'"
    try:
        here = Path.cwd().resolve() == root
    except OSError:
        here = False
    return f'pip install -e "{"." if here else root}[{names}]"'


def _checkout() -> Path | None:
    """The source checkout contrastkit is imported from (``src/contrastkit`` next to a
    ``pyproject.toml`` naming it), or None for an installed wheel."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8") if pyproject.is_file() else ""
    except OSError:
        return None
    return root if 'name = "contrastkit"' in text else None
