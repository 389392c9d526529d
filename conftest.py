"""Suite-wide pytest options, hardware gating and the terminal summary.

Options: ``--data-dir`` (SST-2/WikiText mirror), ``--cache-dir`` (artifact cache),
``--models`` and ``--techniques`` (comma lists, validated against the registries),
``--device`` (``cpu``, ``cuda`` or ``cuda:N``: restrict the run) and ``--on-fallback``
(what a GPU configuration found partly on the CPU does: fail, xfail or warn).
Tests marked for a device tier this machine lacks (or ``--device`` excludes) are skipped
with a reason naming what was looked for; the hardware found and the versions of the
libraries that change results go into the saved run's machine info.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from compressors import CompressbenchError
from compressors.cache import library_versions
from compressors.hardware import TIERS as TIER_MARKERS
from compressors.placement import ON_FALLBACK

# Versions recorded in machine_info: every library whose version can change a result.
MACHINE_INFO_PACKAGES = (
    "torch",
    "transformers",
    "bitsandbytes",
    "onnxruntime",
    "onnxruntime-gpu",
    "peft",
    "accelerate",
    "torchao",
    "onnx",
    "onnxscript",
    "tokenizers",
    "safetensors",
    "numpy",
    "pytest-benchmark",
    "nvidia-ml-py",
    "compressbench",
)

# --benchmark-compare also checks accuracy, perplexity, size and memory (options --compare-*).
pytest_plugins = ["reports.pytest_plugin"]


@dataclasses.dataclass(frozen=True)
class Selection:
    models: list[str] | None
    techniques: list[str] | None


def pytest_addoption(parser):
    group = parser.getgroup("compressbench")
    group.addoption(
        "--data-dir",
        default=None,
        help="GLUE/WikiText mirror folder (default: $COMPRESSBENCH_DATA_DIR, else the Hugging Face Hub)",
    )
    group.addoption(
        "--cache-dir",
        default=None,
        help="artifact cache folder (default: $COMPRESSBENCH_CACHE, else ~/.cache/compressbench)",
    )
    group.addoption("--models", default=None, help="comma list of model names to benchmark (default: all)")
    group.addoption(
        "--techniques",
        default=None,
        help="comma list of techniques or chains (a+b) to benchmark (default: the standard matrix)",
    )
    group.addoption(
        "--device",
        default=None,
        help="restrict the run to one device: cpu, cuda (every GPU tier) or cuda:N (that GPU and its tier)",
    )
    group.addoption(
        "--on-fallback",
        default="fail",
        choices=ON_FALLBACK,
        help="a GPU configuration found (partly) on the CPU: fail (default), xfail, or warn and keep its numbers",
    )


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
    if getattr(config.option, "numprocesses", None) and getattr(config.option, "benchmark_save", None):
        # pytest-benchmark disables timing under xdist and then saves nothing; say so before any work.
        raise pytest.UsageError(
            f"--benchmark-save={config.option.benchmark_save} with -n {config.option.numprocesses}: pytest-benchmark "
            "turns timing off under pytest-xdist, so nothing would be saved. Run without -n to save a run "
            "(-n is for building artifacts and checking accuracy in parallel, without --benchmark-save).")
    config.compressbench_device = None
    if config.getoption("--device") is not None:
        from compressors.hardware import DeviceError, detect, parse_device

        try:
            config.compressbench_device = parse_device(config.getoption("--device"), detect())
        except DeviceError as exc:
            raise pytest.UsageError(str(exc)) from None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    tiered = [(item, tier) for item in items for tier in TIER_MARKERS if item.get_closest_marker(tier)]
    if not tiered:  # unit tests: no need to ask CUDA
        return
    from compressors.hardware import detect

    hardware, choice = detect(), getattr(config, "compressbench_device", None)
    for item, tier in tiered:
        device, reason = hardware.device_for(tier, choice)
        if device is None:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["compressbench"] = compressbench_machine_info(config)


def compressbench_machine_info(config) -> dict:
    """The hardware found (CPU, ISA features, GPUs, driver), the runtimes' view of it, the
    options that select devices, and the versions of every library that changes a result."""
    from compressors.hardware import detect

    info = {
        "hardware": detect().to_dict(),
        "versions": library_versions(*MACHINE_INFO_PACKAGES),
        "device_option": config.getoption("--device"),
        "on_fallback": config.getoption("--on-fallback"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    import torch

    info["torch_build"] = {
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }
    try:
        import onnxruntime

        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        info["onnxruntime_providers"] = None
    try:
        from compressors.placement import bnb_native_library

        info["bitsandbytes_library"] = bnb_native_library()
    except ImportError:
        info["bitsandbytes_library"] = None
    return info


def pytest_runtest_logreport(report):
    if report.when == "call":
        from compressors.results import ResultRow

        outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
        for name, value in report.user_properties:
            if name == "compressbench":
                _ROWS.append(ResultRow.from_extra_info(value["extra_info"], value["median_s"], outcome))


# Result rows of this run (on the xdist controller too: user_properties travel with reports).
_ROWS: list = []


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _ROWS:
        return
    tr = terminalreporter
    from compressors.results import LEGEND, format_table

    tr.section("compressbench results")
    for line in format_table(_ROWS):
        tr.write_line(line)
    if any(row.latency.median_s is None for row in _ROWS):
        tr.write_line(
            "median ms '-': timing disabled (pytest-xdist or --benchmark-disable); run without -n for timings."
        )
    contended = [row for row in _ROWS if row.latency.contended]
    if contended:
        tr.write_line(f"WARNING: {len(contended)} timing(s) contended (another process competed for the CPU; "
                      "their speeds are not comparable, compare tools call them inconclusive):", yellow=True)
        for row in contended:
            tr.write_line(f"  {row.config_id}: {row.latency.contention.get('reason')}", yellow=True)
    tr.write_line(LEGEND)


# Errors raised on purpose carry a message meant for the user: show it without a traceback.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and isinstance(call.excinfo.value, CompressbenchError) and report.failed:
        report.longrepr = f"{type(call.excinfo.value).__name__}: {call.excinfo.value}"
