"""The suite's own pytest hooks, for plugins to implement (pytest-benchmark's ``hookspec.py`` shape).

:func:`register` adds them to a run's plugin manager; bench/conftest.py calls it from its
``pytest_addhooks``, and so does every plugin that implements one of them (it may be loaded before
the suite's conftest), so registering twice is harmless.
"""

from __future__ import annotations

import sys

import pluggy

hookspec = pluggy.HookspecMarker("pytest")

TIMED_CALL_HOOK = "pytest_compressbench_timed_call"


@hookspec(firstresult=True)
def pytest_compressbench_timed_call(config, case, call):
    """Wrap a configuration's timed call before it is timed (by pytest-benchmark, and again by the
    end-of-session re-timing).

    ``config``: the pytest config; ``case``: the configuration (bench.cases.Case; ``case.id`` is its test
    id); ``call``: the timed call, called with the task's arguments. Return a callable taking the same
    arguments to time it instead, or None to leave it as it is. The first non-None result is used.
    """


def register(pluginmanager) -> None:
    """Add the suite's hook specifications to ``pluginmanager``, unless they are there already."""
    hook = getattr(pluginmanager.hook, TIMED_CALL_HOOK, None)
    if hook is None or not hook.has_spec():
        pluginmanager.add_hookspecs(sys.modules[__name__])
