"""The packages' one-way layering, checked on the source (function-level imports included, and modules
started as a process: ``python -m compressors.x`` counts as an import of ``compressors.x``).

compressors (the library) <- bench (the suite) <- reports; compressors imports neither, bench does
not import reports, and no module imports itself back through any chain of imports.

Inside compressors, each subpackage is a layer and imports only from its own layer or lower ones
(LAYERS, bottom first); its root holds the package's error base class and nothing that builds.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compressors", "bench", "reports")
# compressors' layers, bottom first: what each may import is itself and what is above it in this list.
LAYERS = (
    "core",  # registries, configs, the artifact cache (local, remote), settings, scratch, hashes, task names
    "records",  # result rows, statistics
    "machine",  # hardware identity and tiers, kernel probe, allocator, timing, process/GPU memory, placement
    "execution",  # predictors, the loader of every artifact kind, HF classes, module surgery
    "quality",  # data (the task's rows) and metrics
    "builders",  # build context, training, the model catalog, the techniques
    "evaluation",  # a task's evaluation of an artifact, the measuring process and its launcher
    "search",  # the accuracy-aware search over each family's knob (the suite's --search)
)
MAX_ROOT_MODULES = 14


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# A module named to a Python launcher: a string that is a command line ("python -m compressors.x ...", not
# prose that mentions one), or "-m" then "compressors.x" as neighbouring items of a command list or call.
LAUNCH_COMMAND = re.compile(r"^\s*\S*python\S*\s+-m\s+((?:compressors|bench|reports)(?:\.\w+)*)")


def _strings(nodes) -> list[str | None]:
    return [n.value if isinstance(n, ast.Constant) and isinstance(n.value, str) else None for n in nodes]


def launched_modules(tree: ast.AST) -> set[str]:
    """Project modules a source starts as a process (``python -m package.module``), which an import
    statement never shows: a subprocess is a dependency too."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found |= set(LAUNCH_COMMAND.findall(node.value))
        items = node.elts if isinstance(node, (ast.List, ast.Tuple)) else getattr(node, "args", None)
        strings = _strings(items if isinstance(items, list) else [])
        found |= {b for a, b in zip(strings, strings[1:], strict=False) if a == "-m" and b}
    return found


def imported_modules(source: str, known) -> set[str]:
    """The modules of ``known`` that ``source`` imports anywhere (function bodies too) or launches with
    ``python -m``."""
    targets = set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            candidates = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        targets |= {c for c in candidates if c in known}
    return targets | {m for m in launched_modules(tree) if m in known}


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its source (function bodies too) or launches
    as ``python -m``."""
    files = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    return {name: imported_modules(path.read_text(), files) - {name} for name, path in files.items()}


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


def _layer(module: str) -> int | None:
    """Rank of a compressors module's layer (-1: the package root), None outside compressors."""
    parts = module.split(".")
    if parts[0] != "compressors":
        return None
    if len(parts) == 1:
        return -1
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def test_every_compressors_subpackage_is_a_layer_and_the_root_stays_small():
    root = ROOT / "compressors"
    packages = sorted(p.parent.name for p in root.glob("*/__init__.py"))
    assert packages == sorted(LAYERS), f"subpackages {packages} vs layers {list(LAYERS)}: place a new one in LAYERS"
    root_modules = sorted(p.name for p in root.glob("*.py"))
    assert len(root_modules) <= MAX_ROOT_MODULES, root_modules
    assert root_modules == ["__init__.py"], f"modules belong in a layer, not at the root: {root_modules}"


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((m, t) for m, ts in graph.items() for t in ts
                  if _layer(m) is not None and _layer(t) is not None and _layer(t) > _layer(m))


def test_compressors_imports_only_from_its_own_layer_or_lower():
    upward = upward_imports(import_graph())
    assert not upward, "imports from a higher layer: " + ", ".join(f"{m} -> {t}" for m, t in upward)


def test_the_layer_check_sees_an_upward_import_and_allows_the_root_and_its_own_layer():
    fake = {"compressors.core.cache": {"compressors.quality.data", "compressors", "compressors.core.hashing"},
            "compressors.builders.techniques.onnx": {"compressors.builders.models", "compressors.core.cache",
                                                     "bench.x"}}
    assert upward_imports(fake) == [("compressors.core.cache", "compressors.quality.data")]


def test_a_module_launched_with_python_dash_m_counts_as_an_import():
    """A command that starts a higher layer's module is an upward dependency like an import: the check sees
    it in a command list, in a call's arguments and in a command-line string, not in prose that mentions one."""
    known = {"compressors.evaluation.probe", "compressors.machine.hardware", "compressors.quality.metrics"}
    as_list = 'import sys\nsubprocess.run([sys.executable, "-m", "compressors.evaluation.probe", "r.json"])\n'
    as_args = 'import os\nos.execl(sys.executable, "python", "-m", "compressors.evaluation.probe")\n'
    as_text = 'import os\nos.system("python -m compressors.evaluation.probe r.json")\n'
    mention = ('"""Results come from ``python -m compressors.evaluation.probe``."""\n'
               'raise SystemExit("see compressors.evaluation.probe, or run: python -m compressors.evaluation.probe")\n')
    for source in (as_list, as_args, as_text):
        targets = imported_modules(source, known)
        assert targets == {"compressors.evaluation.probe"}, source
        assert upward_imports({"compressors.quality.metrics": targets}) == [
            ("compressors.quality.metrics", "compressors.evaluation.probe")]
    assert imported_modules(mention, known) == set()
    # launching a module of its own layer or a lower one is allowed, like importing it
    lower = imported_modules('cmd = ["python", "-m", "compressors.machine.hardware", "--kernels"]\n', known)
    assert lower == {"compressors.machine.hardware"}
    assert upward_imports({"compressors.quality.metrics": lower}) == []


def test_the_isolated_measurement_is_launched_from_the_evaluation_layer_by_import():
    """The measuring process is started by its own layer, which imports it (no module name in a string)."""
    graph = import_graph()
    launchers = sorted(m for m, ts in graph.items() if "compressors.evaluation.probe" in ts)
    assert launchers == ["compressors.evaluation.isolated"], launchers
    source = (ROOT / "compressors" / "evaluation" / "isolated.py").read_text()
    assert launched_modules(ast.parse(source)) == set(), "name the probe by importing it, not by a string"
