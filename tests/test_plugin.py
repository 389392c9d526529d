"""The suite's pytest wiring is a plugin (bench.plugin) with its run state on config.stash, not a long conftest."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTATING_METHODS = {"append", "extend", "insert", "update", "clear", "pop", "popitem", "remove", "add", "discard",
                    "setdefault", "sort", "reverse"}


def module_state_writes(source: str) -> list[str]:
    """Writes to module-level names from inside functions (``global``, ``NAME.append(...)``, ``NAME[k] = ...``,
    ``NAME += ...``): the mark of run state kept in a module instead of on the session's state object."""
    tree = ast.parse(source)
    module_names = {target.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                    for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                    if isinstance(target, ast.Name)}
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        local = {arg.arg for arg in function.args.args + function.args.kwonlyargs}
        for node in ast.walk(function):
            if isinstance(node, ast.Global):
                found += [f"{function.name}: global {name}" for name in node.names]
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and isinstance(node.func.value, ast.Name) and node.func.attr in MUTATING_METHODS
                  and node.func.value.id in module_names - local):
                found.append(f"{function.name}: {node.func.value.id}.{node.func.attr}()")
            elif isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    base = target.value if isinstance(target, ast.Subscript) else target
                    if (isinstance(base, ast.Name) and base.id in module_names - local
                            and (isinstance(target, ast.Subscript) or isinstance(node, ast.AugAssign))):
                        found.append(f"{function.name}: {base.id} written")
    return found


def test_no_module_level_run_state_in_the_suite():
    writes = {str(path.relative_to(ROOT)): module_state_writes(path.read_text())
              for path in sorted((ROOT / "bench").rglob("*.py"))}
    assert {path: found for path, found in writes.items() if found} == {}


def test_the_state_check_sees_globals_appends_and_item_writes():
    source = '''
_ROWS = []
_RUN = {}
COUNT = 0

def record(row):
    _ROWS.append(row)

def start(config):
    _RUN["config"] = config

def bump():
    global COUNT
    COUNT += 1

def fine(rows):
    rows.append(1)
    local = {}
    local["x"] = 1
'''
    assert module_state_writes(source) == ["record: _ROWS.append()", "start: _RUN written", "bump: global COUNT",
                                           "bump: COUNT written"]


def test_the_root_conftest_only_loads_the_plugins():
    text = (ROOT / "conftest.py").read_text()
    assert len(text.splitlines()) <= 40
    tree = ast.parse(text)
    assert [type(node).__name__ for node in tree.body] == ["Expr", "Assign"]  # a docstring and pytest_plugins
    assert ast.literal_eval(tree.body[1].value) == ["bench.plugin", "reports.pytest_plugin"]


def test_tests_load_the_plugin_and_never_copy_the_conftest():
    copying = [str(path.relative_to(ROOT)) for path in (ROOT / "tests").rglob("*.py")
               if path.name != Path(__file__).name and "makeconftest((ROOT" in path.read_text()]
    assert copying == []


def test_two_sessions_in_one_process_keep_their_own_rows(pytester, monkeypatch):
    """In-process runs (pytester.runpytest) share the plugin's modules; their rows must not leak between them."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_row='''
def test_row(record_property):
    record_property("compressbench_time", {"build": 1.0})
''')
    for _ in range(2):
        result = pytester.runpytest("-p", "no:cacheprovider", "-p", "bench.plugin", "-p", "no:randomly")
        result.assert_outcomes(passed=1)
        # the time line sums this session's one test only: 1 s of building, not 2 s in the second session
        time_line = next(line for line in result.outlines if line.startswith("time:"))
        assert "building (or reading the cache) 1 s" in time_line, time_line
