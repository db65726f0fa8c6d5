"""
Fail if the modules of ``sb3_safemeta`` import each other in a circle.

Every import counts: module level, inside functions (a deferred import is still a dependency) and under
``if TYPE_CHECKING:``. Run from the repository root: ``python scripts/check_import_cycles.py`` (CI does).
"""

from __future__ import annotations

import ast
import pathlib
import sys

PACKAGE = "sb3_safemeta"


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: pathlib.Path, name: str, modules: set[str]) -> set[str]:
    """The package's own modules that ``path`` imports (``from a import b`` counts a.b when it is a module)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            # a module, else its closest enclosing package
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith(PACKAGE):
                found.add(target)
    return found


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def main() -> int:
    root = pathlib.Path(__file__).resolve().parent.parent
    paths = sorted((root / PACKAGE).rglob("*.py"))
    names = {module_name(path, root): path for path in paths}
    graph = {name: imported_modules(path, name, set(names)) for name, path in names.items()}
    # a package's __init__ re-exporting its submodules is not a circle with them
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not (name.startswith(t + ".") and names[t].name == "__init__.py")}
    cycles = find_cycles(graph)
    for cycle in cycles:
        print("import circle:", " <-> ".join(cycle))
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} internal imports, {len(cycles)} circles")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
