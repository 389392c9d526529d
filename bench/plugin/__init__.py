"""The suite's pytest plugin (pytest-benchmark's shape: a plugin with its run state on one object).

Load it with ``-p bench.plugin`` (the repository's root conftest.py does, for ``pytest bench``). Its modules,
each a plugin of its own that this one registers:

- :mod:`bench.plugin.state`: the run's state, one :class:`~bench.plugin.state.RunState` on ``config.stash``;
- :mod:`bench.plugin.options`: every flag from one table (compressors.core.settings.OPTIONS), resolved once;
- :mod:`bench.plugin.selection`: ``--models`` / ``--techniques`` / ``--device`` checked before collection;
- :mod:`bench.plugin.remote`: a remote cache URL that cannot work here, said at session start;
- :mod:`bench.plugin.process`: the allocator, threads under pytest-xdist, SIGTERM as Ctrl-C;
- :mod:`bench.plugin.gating`: skips for absent hardware tiers and reference-fallback kernels;
- :mod:`bench.plugin.record`: machine info, finished rows and times, the partial file, plan lines;
- :mod:`bench.plugin.summary`: the results table, the remote cache line and the ``time:`` line;
- :mod:`bench.plugin.search`: ``--search``, the accuracy-aware search before collection (compressors/search/);
- :mod:`bench.plugin.hookspecs`: the suite's own hook, ``pytest_compressbench_timed_call`` (a plugin may wrap
  a configuration's timed call: ``bench.fault_injection``, which only tests and the A/A check load).

Order matters only in ``pytest_configure``: options (tryfirst) resolves the settings the others read.
"""

def pytest_addhooks(pluginmanager):
    from bench.plugin import hookspecs

    hookspecs.register(pluginmanager)  # pytest_compressbench_timed_call (bench/fault_injection.py implements it)


pytest_plugins = [
    "bench.plugin.options",
    "bench.plugin.selection",
    "bench.plugin.remote",
    "bench.plugin.process",
    "bench.plugin.gating",
    "bench.plugin.record",
    "bench.plugin.summary",
    "bench.plugin.search",
]
