"""``contrastkit serve RUN_DIR``: a small local web page to explore a run, read-only — search
its indexes with a text or an image, browse its test images and their neighbours, or see a
user's history beside their recommendations. Needs the ``serve`` extra (Flask).

``create_app(run_dir)`` is the Flask app (tests use its test client); ``serve`` runs it.
"""

from __future__ import annotations

from contrastkit.serve.app import MAX_UPLOAD, create_app, serve
from contrastkit.serve.explorer import Explorer

__all__ = ["MAX_UPLOAD", "Explorer", "create_app", "serve"]
