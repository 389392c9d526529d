"""Suite-wide pytest options, hardware gating and the terminal summary.

Options: ``--data-dir`` (SST-2/WikiText mirror), ``--cache-dir`` (artifact cache),
``--models`` and ``--techniques`` (comma lists, validated against the registries).
Tests marked for a device tier this machine lacks are skipped with a reason;
the hardware found goes into the saved run's machine info.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from compressors import CompressbenchError
from compressors.cache import library_versions

TIER_MARKERS = ("cpu", "t4", "legacy_gpu")

# --benchmark-compare also checks accuracy, perplexity, size and memory (options --compare-*).
pytest_plugins = ["reports.pytest_plugin"]


@dataclasses.dataclass(frozen=True)
class Selection:
    models: list[str] | None
    techniques: list[str] | None


def pytest_addoption(parser):
    group = parser.getgroup("compressbench")
    group.addoption("--data-dir", default=None,
                    help="GLUE/WikiText mirror folder (default: $COMPRESSBENCH_DATA_DIR, else the Hugging Face Hub)")
    group.addoption("--cache-dir", default=None,
                    help="artifact cache folder (default: $COMPRESSBENCH_CACHE, else ~/.cache/compressbench)")
    group.addoption("--models", default=None, help="comma list of model names to benchmark (default: all)")
    group.addoption("--techniques", default=None,
                    help="comma list of techniques or chains (a+b) to benchmark (default: the standard matrix)")


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    return names or None


def pytest_configure(config):
    from compressors.models import MODELS
    from compressors.techniques import ChainError, parse_chain

    models = _split(config.getoption("--models"))
    techniques = _split(config.getoption("--techniques"))
    for name in models or []:
        if name not in MODELS:
            raise pytest.UsageError(f"--models: unknown model {name!r}; valid models: {MODELS.describe_names()}")
    for name in techniques or []:
        try:
            parse_chain(name)
        except ChainError as exc:
            raise pytest.UsageError(f"--techniques: {exc}") from None
    config.compressbench_selection = Selection(models, techniques)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    from compressors.hardware import detect

    present = set(detect().tiers)
    for item in items:
        for tier in TIER_MARKERS:
            if item.get_closest_marker(tier) and tier not in present:
                item.add_marker(pytest.mark.skip(reason=f"needs the {tier} tier; this machine has {sorted(present)}"))


def pytest_benchmark_update_machine_info(config, machine_info):
    from compressors.hardware import detect

    machine_info["compressbench"] = {
        "hardware": detect().to_dict(),
        "versions": library_versions("torch", "transformers", "onnx", "onnxruntime", "tokenizers",
                                     "pytest-benchmark", "numpy"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def pytest_runtest_logreport(report):
    if report.when == "call":
        for name, value in report.user_properties:
            if name == "compressbench":
                row = dict(value)
                row["outcome"] = report.outcome
                _ROWS.append(row)


# Result rows of this run (on the xdist controller too: user_properties travel with reports).
_ROWS: list[dict] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _ROWS:
        return
    tr = terminalreporter
    from reports.runs import LEGEND, format_table

    tr.section("compressbench results")
    for line in format_table(_ROWS):
        tr.write_line(line)
    if any(row.get("median_s") is None for row in _ROWS):
        tr.write_line("median ms '-': timing disabled (pytest-xdist or --benchmark-disable); "
                      "run without -n for timings.")
    tr.write_line(LEGEND)


# Errors raised on purpose carry a message meant for the user: show it without a traceback.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and isinstance(call.excinfo.value, CompressbenchError) and report.failed:
        report.longrepr = f"{type(call.excinfo.value).__name__}: {call.excinfo.value}"
