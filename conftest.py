"""The suite's pytest wiring lives in the plugin ``bench.plugin`` (options, selection, gating, the run record
and the summary; see its docstring); ``reports.pytest_plugin`` adds ``--benchmark-compare`` on every metric.
This file only loads both for runs from the repository (``pytest bench ...`` and the unit tests); a test of the
suite's own hooks loads them with ``-p bench.plugin -p reports.pytest_plugin``.
"""

pytest_plugins = ["bench.plugin", "reports.pytest_plugin"]
