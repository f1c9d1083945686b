"""The API reference: HTML pages built from the docstrings of contrastkit's public modules by
pdoc (``make docs``; ``make test`` builds it too). Any warning — a module that does not import,
a name in ``__all__`` that does not resolve, a broken cross-reference — fails the build, except
pdoc's own limit with dataclass fields inherited from another module (it cannot resolve their
annotation in the subclass's module).

    python tools/build_reference.py build/reference
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

# what a user imports: the runs, the blocks for their own loop, and the layers below them
MODULES = [
    "contrastkit.api", "contrastkit.losses", "contrastkit.augment", "contrastkit.negatives", "contrastkit.nn",
    "contrastkit.methods", "contrastkit.training", "contrastkit.tasks", "contrastkit.evaluate", "contrastkit.index",
    "contrastkit.export", "contrastkit.data", "contrastkit.recipes", "contrastkit.config",
]
TOLERATED = ("Error parsing type annotation",)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="build/reference", help="folder for the HTML pages")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched while modules import
    import pdoc

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*MODULES, output_directory=Path(args.out))
    problems = [w for w in caught if issubclass(w.category, UserWarning) and not str(w.message).startswith(TOLERATED)]
    for w in problems:
        print(f"reference: {str(w.message).strip().splitlines()[0]}", file=sys.stderr)
    pages = sum(1 for _ in Path(args.out).rglob("*.html"))
    print(f"API reference: {pages} pages in {args.out}" + (f", {len(problems)} problem(s)" if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
