"""Test-only fault injection: a pytest plugin, loaded only by tests and by hand (``-p``), that slows one
configuration's timed call on purpose, to check that a comparison flags a real slowdown (the
injected-slowdown check in docs/verdicts.md)::

    pytest bench -m cpu -p bench.fault_injection --inject-slowdown minilm-sst2-onnx-int8-cpu-bs32=1.25

``--inject-slowdown TEST_ID=FACTOR`` (repeatable) makes that test's timed call ``FACTOR`` times slower:
after each call it sleeps ``FACTOR - 1`` times the call's own duration. It wraps the call through the
suite's ``pytest_compressbench_timed_call`` hook (bench/plugin/hookspecs.py), so the production path carries
no trace of it. The sleep also slows the call after it (caches and CPU frequency cool down), so the
measured slowdown is larger than the nominal factor.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from bench.plugin import hookspecs

SLOWDOWNS = pytest.StashKey[dict]()  # test id -> factor, parsed once per run


def parse_slowdowns(specs: list[str]) -> dict[str, float]:
    """``["<test id>=<factor>", ...]`` as ``{test id: factor}``; a factor is a number of at least 1."""
    slowdowns = {}
    for spec in specs:
        target, _, factor = spec.partition("=")
        try:
            value = float(factor)
        except ValueError:
            value = None
        if not target or value is None or value < 1.0:
            raise pytest.UsageError(f"--inject-slowdown {spec!r}: need TEST_ID=FACTOR with FACTOR >= 1 "
                                    "(e.g. minilm-sst2-onnx-int8-cpu-bs32=1.25)")
        slowdowns[target] = value
    return slowdowns


def slowed(call: Callable, factor: float) -> Callable:
    """``call``, ``factor`` times slower: after each call, a sleep of ``factor - 1`` times its duration."""
    def slowed_call(*args):
        start = time.perf_counter()
        out = call(*args)
        time.sleep((time.perf_counter() - start) * (factor - 1))
        return out

    return slowed_call


def pytest_addhooks(pluginmanager):
    hookspecs.register(pluginmanager)  # loaded with -p: before the suite's conftest registers them


def pytest_addoption(parser):
    parser.getgroup("compressbench").addoption(
        "--inject-slowdown", action="append", default=[], metavar="TEST_ID=FACTOR",
        help="test-only (bench.fault_injection): make that test's timed call FACTOR times slower, to check that "
             "a comparison flags it (repeatable)")


def pytest_configure(config):
    config.stash[SLOWDOWNS] = parse_slowdowns(config.getoption("--inject-slowdown"))


def pytest_report_header(config):
    slowdowns = config.stash[SLOWDOWNS]
    if slowdowns:  # a run with a fault in it says so
        return "fault injection: " + ", ".join(f"{test_id} {factor:g}x slower" for test_id, factor in slowdowns.items())
    return None


def pytest_compressbench_timed_call(config, case, call):
    factor = config.stash[SLOWDOWNS].get(case.id)
    return None if factor is None or factor == 1.0 else slowed(call, factor)
