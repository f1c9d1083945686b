"""`python -m contrastkit` runs the command line."""

from __future__ import annotations

import sys

from contrastkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
