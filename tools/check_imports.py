"""The package's import rules, checked on its source (CI runs this):

1. zero import cycles among the modules of ``src/contrastkit``, counting imports inside
   functions (imports under ``if TYPE_CHECKING:`` are not executed and do not count). Excepted:
   a registry importing its own package so that the package's members register (a cycle made
   of a subpackage's ``__init__`` and its own members only, e.g. ``contrastkit.methods``);
2. no task imports another task: a task is a module or package directly under
   ``contrastkit.tasks`` (``base`` is the protocol every task uses, not a task);
3. ``contrastkit.config`` (the schema) imports no task.

Prints what breaks a rule and exits 1, else prints a one-line summary and exits 0.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "contrastkit"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The package modules that module ``name`` imports (at any depth of its code)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(target: str) -> None:
        while target and target not in modules:  # `from a.b import c` where c is a name, not a module
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith(PACKAGE):
                        resolve(alias.name)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative import
                    anchor = name if is_package else name.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                if base.startswith(PACKAGE):
                    for alias in child.names:
                        full = f"{base}.{alias.name}"
                        resolve(full if full in modules else base)
            visit(child)

    visit(tree)
    return found


def task_of(module: str) -> str | None:
    """The task a module belongs to (``contrastkit.tasks.X`` or inside package X), else None."""
    prefix = f"{PACKAGE}.tasks."
    if not module.startswith(prefix):
        return None
    first = module[len(prefix):].split(".")[0]
    return None if first == "base" else first


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def main() -> int:
    paths = {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}
    modules = set(paths)
    graph = {name: imports(path, name, modules) for name, path in paths.items()}
    problems: list[str] = []
    packages = {name for name, path in paths.items() if path.name == "__init__.py" and name != PACKAGE}
    for component in cycles(graph):
        registration = any(p in component and all(m == p or m.startswith(p + ".") for m in component) for p in packages)
        if not registration:
            problems.append("import cycle: " + " <-> ".join(component))
    for name, targets in sorted(graph.items()):
        mine = task_of(name)
        for target in sorted(targets):
            other = task_of(target)
            if mine is not None and other is not None and other != mine:
                problems.append(f"task {mine} imports task {other}: {name} -> {target}")
        if name == f"{PACKAGE}.config" and any(t.startswith(f"{PACKAGE}.tasks") for t in targets):
            problems.append(f"{PACKAGE}.config (the schema) imports tasks: {sorted(targets)}")
    for line in problems:
        print(line)
    edges = sum(len(t) for t in graph.values())
    print(f"{len(modules)} modules, {edges} imports: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
