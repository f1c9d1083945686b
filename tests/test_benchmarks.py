"""CI runs no benchmark (benchmarks/*.py), so API drift in them would go unseen: every
``import contrastkit...`` / ``from contrastkit... import name`` they hold, at module level or inside
functions, must name a module of src/contrastkit and names it defines; the same for what they
import from one another (``from common import ...``). Static: the scripts and the modules they
name are parsed, not run or imported (importing torch alone takes seconds); a module that makes
names on demand (a module ``__getattr__``) is imported to ask it."""

from __future__ import annotations

import ast
import importlib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))
LOCAL = {p.stem for p in SCRIPTS}  # what the scripts import from one another


def imports_of(source: str, filename: str = "<benchmark>") -> list[tuple[int, str, str | None]]:
    """(line, module, name or None) of every import of contrastkit or of a benchmark script in
    ``source``, wherever it stands; a benchmark script imported whole (``import common``) counts
    as importing each name used from it (``common.parser``)."""
    tree = ast.parse(source, filename)
    found: list[tuple[int, str, str | None]] = []
    whole: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, None) for a in node.names if ours(a.name)]
            whole.update(a.name for a in node.names if a.name in LOCAL and a.asname is None)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and ours(node.module):
            found += [(node.lineno, node.module, a.name) for a in node.names]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in whole:
            found.append((node.lineno, node.value.id, node.attr))
    return sorted(found, key=lambda f: f[0])


def ours(module: str) -> bool:
    return module.split(".")[0] == "contrastkit" or module in LOCAL


def module_file(module: str) -> Path | None:
    """The file of a contrastkit module or of a benchmark script, if there is one."""
    if module in LOCAL:
        return BENCHMARKS / f"{module}.py"
    base = SRC.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _bind(target: ast.expr, names: set[str]) -> None:
    if isinstance(target, ast.Name):
        names.add(target.id)
    elif isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            _bind(element, names)


def _top_level(body: list[ast.stmt], names: set[str]) -> None:
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                _bind(target, names)
                if isinstance(target, ast.Name) and target.id == "__all__" and isinstance(node.value, ast.List):
                    names.update(e.value for e in node.value.elts if isinstance(e, ast.Constant))  # lazy names too
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
            _bind(node.target, names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                _top_level(node.body, names)
            _top_level(node.orelse, names)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                _top_level(block, names)
        elif isinstance(node, ast.With):
            _top_level(node.body, names)


@cache
def defined(path: Path) -> frozenset[str]:
    """The names a module binds at its top level or lists in ``__all__`` (``*`` where it imports
    everything of another, ``__getattr__`` where it makes names on demand)."""
    names: set[str] = set()
    _top_level(ast.parse(path.read_text(encoding="utf-8"), str(path)).body, names)
    return frozenset(names)


def missing(imports: list[tuple[int, str, str | None]]) -> list[str]:
    """What of ``imports`` does not resolve, one line each."""
    problems = []
    for line, module, name in imports:
        path = module_file(module)
        if path is None:
            problems.append(f"line {line}: no module {module}")
            continue
        if name is None or name == "*" or name in defined(path) or module_file(f"{module}.{name}"):
            continue
        on_demand = {"*", "__getattr__"} & defined(path) and module not in LOCAL
        if on_demand and hasattr(importlib.import_module(module), name):
            continue
        problems.append(f"line {line}: {module} has no {name!r}")
    return problems


def test_the_check_finds_wrong_names() -> None:
    source = (
        "import contrastkit.runner\n"
        "def f():\n"
        "    from contrastkit.runner import train_run, no_such_thing\n"
        "    from contrastkit.data.image import spec\n"
        "    import contrastkit.nope\n"
        "    from common import parser, nothing_here\n"
        "    from contrastkit import load_run, not_lazy_either\n"
        "import common\n"
        "common.ratio_table(common.gone)\n"
    )
    imports = imports_of(source)
    assert [(m, n) for _, m, n in imports] == [
        ("contrastkit.runner", None),
        ("contrastkit.runner", "train_run"), ("contrastkit.runner", "no_such_thing"),
        ("contrastkit.data.image", "spec"), ("contrastkit.nope", None),
        ("common", "parser"), ("common", "nothing_here"),
        ("contrastkit", "load_run"), ("contrastkit", "not_lazy_either"), ("common", None),
        ("common", "ratio_table"), ("common", "gone"),
    ]
    assert missing(imports) == [
        "line 3: contrastkit.runner has no 'no_such_thing'",
        "line 5: no module contrastkit.nope",
        "line 6: common has no 'nothing_here'",
        "line 7: contrastkit has no 'not_lazy_either'",
        "line 9: common has no 'gone'",
    ]


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_benchmark_imports_resolve(script: Path) -> None:
    problems = missing(imports_of(script.read_text(encoding="utf-8"), str(script)))
    assert not problems, f"benchmarks/{script.name}:\n" + "\n".join(problems)
