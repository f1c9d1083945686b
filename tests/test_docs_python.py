"""Docs as tests, the Python half: every ```python block of README.md and docs/*.md runs here as
written — the blocks of one document in order, in one fresh Python process and one empty folder
(a block may use what an earlier block of its document made, as a reader running them in turn
would). The shell commands are tests/test_docs.py's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)

RUNNER = """
import json, sys, traceback
doc, blocks = sys.argv[1], json.load(open(sys.argv[2]))
namespace = {"__name__": "__main__"}
for line, code in blocks:
    print(f"--- {doc}:{line}", flush=True)
    try:
        exec(compile(code, f"{doc}:{line}", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"the block at {doc}:{line} failed", flush=True)
        sys.exit(1)
"""


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(first line number, code) of each ```python block of a Markdown file."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in BLOCK.finditer(text)]


DOCUMENTS = [p for p in DOCS if python_blocks(p)]


def test_the_docs_have_python_blocks_to_run() -> None:
    """The docs tests find the blocks (README's losses, the Python API page's examples)."""
    counted = {p.relative_to(REPO).as_posix(): len(python_blocks(p)) for p in DOCUMENTS}
    assert counted.get("README.md", 0) >= 1 and counted.get("docs/api.md", 0) >= 6, counted


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_python_blocks_run_as_written(doc: Path, tmp_path: Path) -> None:
    name = doc.relative_to(REPO).as_posix()
    blocks = tmp_path / "blocks.json"
    blocks.write_text(json.dumps(python_blocks(doc)))
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", RUNNER, name, str(blocks)], cwd=work, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
