"""What a run records: the machine (pytest-benchmark's machine_info), each finished configuration's row and
time, the partial file that keeps finished rows of a stopped run, the plan lines of models given by path, and
how the session ended (in the saved JSON's ``compressbench`` block)."""

from __future__ import annotations

import os
import time

import pytest

from bench.plugin.gating import case_of, kernel_probe
from bench.plugin.options import setting
from bench.plugin.state import RunState, run_state
from compressors.core.cache import library_versions

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
    "openvino",
    "nncf",
    "tokenizers",
    "safetensors",
    "numpy",
    "pytest-benchmark",
    "nvidia-ml-py",
    "compressbench",
)


def pytest_configure(config):
    run_state(config).start = time.perf_counter()
    config.pluginmanager.register(RunRecorder(config), "compressbench-run-recorder")


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["compressbench"] = compressbench_machine_info(config)


def compressbench_machine_info(config) -> dict:
    """The hardware found (CPU, ISA features, GPUs, driver), the runtimes' view of it, the
    options that select devices, and the versions of every library that changes a result."""
    from compressors.machine.hardware import detect

    state = run_state(config)
    settings = state.settings if state is not None else None
    info = {
        "hardware": detect().to_dict(),
        "versions": library_versions(*MACHINE_INFO_PACKAGES),
        "device_option": setting(config, "device"),
        "on_fallback": setting(config, "on_fallback"),
        "kernel_probe": kernel_probe(config),
        "run_slow_kernels": setting(config, "run_slow_kernels"),
        "settings": settings.to_dict() if settings is not None else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "malloc": state.malloc if state is not None else None,
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
        from compressors.machine.placement import bnb_native_library

        info["bitsandbytes_library"] = bnb_native_library()
    except ImportError:
        info["bitsandbytes_library"] = None
    return info


def run_time(config) -> dict | None:
    """Where this run's wall time went (compressors.machine.timing.time_breakdown), or None when no benchmark
    test ran. In one process the session's own account (it also holds the end-of-run re-timing);
    under pytest-xdist the workers' tests, summed."""
    state = run_state(config)
    if state is None or state.start is None or not state.times:
        return None
    from compressors.machine.timing import time_breakdown

    workers = getattr(config.option, "numprocesses", None)
    workers = workers if isinstance(workers, int) and workers > 1 else 1
    session = state.bench_session
    shares = [session.account.seconds] if session is not None and workers == 1 else state.times
    return time_breakdown(shares, time.perf_counter() - state.start, workers=workers)


class RunRecorder:
    """The hooks that follow the run as it goes (registered per session; the hooks without a config argument
    reach the run's state through it)."""

    def __init__(self, config):
        self.config = config
        self.state: RunState = run_state(config)

    def pytest_runtest_logreport(self, report):
        if report.when != "call":
            return
        from compressors.records.results import ResultRow

        outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
        for name, value in report.user_properties:
            if name == "compressbench_time":  # one test's time by phase (bench/harness.py: run_benchmark)
                self.state.times.append(value)
            if name == "compressbench":
                self.state.rows.append(ResultRow.from_extra_info(value["extra_info"], value["median_s"], outcome))
                self._keep_partial(report.nodeid, value)

    def _keep_partial(self, nodeid: str, value: dict) -> None:
        if hasattr(self.config, "workerinput"):  # xdist workers: the controller keeps it
            return
        state = self.state
        if state.partial is None:
            from bench.partial_run import PartialRun, storage_folder

            try:
                storage = storage_folder(self.config.getoption("benchmark_storage", None))
            except ValueError:
                return
            state.partial = PartialRun(storage, self.config.getoption("benchmark_save", None), state.selected)
        state.partial.add(nodeid, value["median_s"], value["extra_info"])

    def pytest_collection_finish(self, session):
        self.state.selected = len(session.items)

    def pytest_keyboard_interrupt(self, excinfo):
        self.state.interrupted = self.state.interrupted or "Ctrl-C"

    def pytest_benchmark_update_json(self, config, benchmarks, output_json):
        """Mark a run saved on the way out of an interrupted session as partial (it lacks configurations)."""
        state = self.state
        interrupted = state.interrupted
        remote = state.remote
        output_json["compressbench"] = {
            "partial": bool(interrupted), "status": f"interrupted ({interrupted})" if interrupted else "complete",
            "tests_selected": state.selected, "tests_finished": len(state.rows), "time_s": run_time(config),
            "plans": state.plans or None, "remote_cache": None if remote is None else remote.summary()}
        if state.search_record is not None:
            output_json["compressbench"]["search"] = state.search_record

    def pytest_sessionfinish(self, session, exitstatus):
        state = self.state
        if state.partial is not None:
            interrupted = state.interrupted or (exitstatus == pytest.ExitCode.INTERRUPTED and "interrupted")
            kept = state.partial.finish(bool(interrupted), interrupted or None)
            if kept is not None:
                state.partial_file = kept


def pytest_report_collectionfinish(config, start_path, items):
    """Before the first build (and with --collect-only): one plan line per model given by path or hub id,
    what the run will build, train and measure for it and about how long (bench/plan.py)."""
    state = run_state(config)
    user_models = [m for m in state.selection.models or [] if not isinstance(m, str)]
    if not user_models or hasattr(config, "workerinput"):
        return None
    from bench.plan import plan_model
    from compressors.core.cache import ArtifactCache
    from compressors.machine.hardware import this_cpu

    runnable = {}
    for item in items:
        case = case_of(item)
        if case is not None and not item.get_closest_marker("skip") and case.tier == "cpu":
            runnable.setdefault(case.model.name, []).append(case)
    lines, plans = [], []
    for model in user_models:
        data = state.user_data.get(model.name)
        if data is None:
            from compressors.quality.data import resolve_data_dir
            from compressors.quality.taskdata import default_data

            data = default_data(model.task, resolve_data_dir(setting(config, "data_dir")))
        try:
            plan = plan_model(model, runnable.get(model.name, []), data, ArtifactCache(setting(config, "cache_dir")),
                              this_cpu(), kernel_probe(config))
        except Exception as exc:  # a plan is advice: it never stops a run
            lines.append(f"plan: {model.name}: no estimate ({type(exc).__name__}: {exc})")
            continue
        if plan is None:
            lines.append(f"plan: {model.name}: no estimate until its hub snapshot is in the local cache")
            continue
        plans.append(plan.to_dict())
        lines.append(plan.line())
    state.plans = plans
    return lines
