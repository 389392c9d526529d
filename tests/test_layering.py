"""The packages' one-way layering, checked on the source (function-level imports included).

compressors (the library) <- bench (the suite) <- reports; compressors imports neither, bench does
not import reports, and no module imports itself back through any chain of imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compressors", "bench", "reports")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its source (function bodies too)."""
    files = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                candidates = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            targets |= {c for c in candidates if c in files}
        graph[name] = targets - {name}
    return graph


def test_bench_does_not_import_reports_and_compressors_imports_neither():
    graph = import_graph()
    wrong = sorted((m, t) for m, ts in graph.items() for t in ts
                   if (m.startswith("bench") and t.startswith("reports"))
                   or (m.startswith("compressors") and t.split(".")[0] in ("bench", "reports")))
    assert not wrong, f"imports against the layering: {wrong}"


def test_no_import_cycle_even_through_function_level_imports():
    graph = import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
