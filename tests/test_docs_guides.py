"""Docs as tests, second half: the commands of docs/*.md (the README's are in test_docs.py)."""

from __future__ import annotations

import pytest

from .test_docs import Sandbox, cases, run_documented


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    return Sandbox(tmp_path_factory.mktemp("docs"))


@pytest.mark.parametrize(("doc", "command"), cases(readme=False))
def test_documented_command_runs_as_written(doc: str, command: str, sandbox: Sandbox) -> None:
    run_documented(doc, command, sandbox)
