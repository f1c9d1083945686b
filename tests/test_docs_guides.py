"""Docs as tests, second half: the commands of the documents that share no run with the README
(agents, benchmarks, distributed, generators); README.md, use.md and data.md are in test_docs.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .test_docs import Sandbox, cases, make_sandbox, run_documented


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    yield from make_sandbox(tmp_path_factory)


@pytest.mark.parametrize(("doc", "command"), cases(readme_half=False))
def test_documented_command_runs_as_written(doc: str, command: str, sandbox: Sandbox) -> None:
    run_documented(doc, command, sandbox)
