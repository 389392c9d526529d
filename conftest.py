"""Suite-wide pytest options, hardware gating and the terminal summary.

Options: ``--data-dir`` (SST-2/WikiText mirror), ``--cache-dir`` (artifact cache),
``--models`` and ``--techniques`` (comma lists, validated against the registries),
``--device`` (``cpu``, ``cuda`` or ``cuda:N``: restrict the run) and ``--on-fallback``
(what a GPU configuration found partly on the CPU does: fail, xfail or warn), ``--malloc``
(the timing process's glibc allocator: ``steady`` by default, see compressors/machine/allocator.py).
Tests marked for a device tier this machine lacks (or ``--device`` excludes) are skipped
with a reason naming what was looked for; the hardware found and the versions of the
libraries that change results go into the saved run's machine info.
"""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from compressors import CompressbenchError
from compressors.core.cache import library_versions
from compressors.machine.hardware import TIERS as TIER_MARKERS

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

# --benchmark-compare also checks accuracy, perplexity, size and memory (options --compare-*).
pytest_plugins = ["reports.pytest_plugin"]


@dataclasses.dataclass(frozen=True)
class Selection:
    models: list[str] | None
    techniques: list[str] | None


def pytest_addoption(parser):
    from compressors.core.settings import OPTIONS

    group = parser.getgroup("compressbench")
    group.addoption(
        "--compressbench-config",
        default=None,
        help="a TOML file whose [tool.compressbench] table (or top level) holds settings and named models "
        "(default: the [tool.compressbench] table of ./pyproject.toml); the command line wins over it",
    )
    # Every flag defaults to None ("not given"), so the settings table can stand below the command line;
    # the defaults live once, in compressors/core/settings.py.
    for option in OPTIONS:
        kwargs = {"default": None, "help": option.help + ("" if option.default in (None, False)
                                                          else f" (default: {option.default})")}
        if option.switch:
            kwargs["action"] = "store_true"
        if option.choices:
            kwargs["choices"] = option.choices
        group.addoption(option.flag, **kwargs)


def _split(option: str, value: list[str] | None, valid: str) -> list[str] | None:
    """A comma list setting: None when not given; an empty list or a repeated name is an error."""
    if value is None:
        return None
    names = list(value)
    if not all(names):
        raise pytest.UsageError(f"{option}={','.join(value)!r} has an empty name; give a comma list of names ({valid})")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise pytest.UsageError(f"{option}={','.join(value)!r} names {', '.join(repeated)} more than once")
    return names


def check_selection(models: list | None, techniques: list[str] | None) -> None:
    """Every named model and chain exists, and every chain's parameters fit every selected model it
    applies to (``layerdrop-99`` on a 6-layer encoder), from configs read without weights. ``models``:
    registered names or :class:`~compressors.builders.models.ModelSpec` objects (models given by path)."""
    from compressors.builders.models import MODELS, ModelSpec
    from compressors.builders.techniques import ChainError, parse_chain

    for name in models or []:
        if not isinstance(name, ModelSpec) and name not in MODELS:
            raise pytest.UsageError(f"--models: unknown model {name!r}; valid models: {MODELS.describe_names()}, "
                                    "a folder (./my-model) or a hub id (hub:org/name)")
    chains = []
    for name in techniques or []:
        try:
            chains.append(parse_chain(name))
        except ChainError as exc:
            raise pytest.UsageError(f"--techniques: {exc}") from None
    for chain in chains:
        if not any(stage.layers_after for stage in chain.build_stages):
            continue
        for model in (m if isinstance(m, ModelSpec) else MODELS.get(m) for m in (models or MODELS.names())):
            layers = model.encoder_layers() if model.task in chain.tasks else None
            if layers is not None:
                try:
                    chain.check_layers(layers, model.name)
                except ChainError as exc:
                    raise pytest.UsageError(f"--techniques: {exc}") from None


def setting(config, name: str):
    """One resolved setting (compressors.core.settings) of this run; its default where the config has none
    (a stand-in config in unit tests)."""
    from compressors.core.settings import BY_NAME

    settings = getattr(config, "compressbench_settings", None)
    if settings is not None:
        return settings.values[name]
    try:
        value = config.getoption(BY_NAME[name].flag)
    except (ValueError, AttributeError):
        value = None
    return BY_NAME[name].default if value is None else value


def user_selection(settings, names: list[str] | None) -> tuple[list | None, dict]:
    """``(models, user_data)``: registered names stay names; a folder, a hub id (``hub:org/name``) or a model
    named in the settings table becomes a ModelSpec (compressors.builders.models.user), checked now, with its data
    (compressors.quality.taskdata.user_data) read and checked now too. Data options without such a model are an
    error."""
    from compressors import CompressbenchError
    from compressors.builders.models import MODELS
    from compressors.builders.models.user import parse_model_argument, user_model_spec
    from compressors.quality.taskdata import user_data

    data_options = [o for o in ("dataset", "dataset_eval", "dataset_train", "text_file", "text_file_train")
                    if settings.values[o] is not None]
    models, data, taken = [], {}, set(MODELS.names())
    for name in names or []:
        named = settings.named_models.get(name)
        kind = "named" if named is not None else parse_model_argument(name)[0]
        if kind == "registered":
            models.append(name)
            continue
        values = {**settings.values, **(named or {})}
        arg = name if named is None else (named["path"] if "path" in named else "hub:" + named["hub"])
        try:
            spec = user_model_spec(arg, trust_remote_code=bool(values["trust_remote_code"]), taken=taken)
            if named is not None:
                spec = dataclasses.replace(spec, name=name)
            where = f"--models {name}"
            config = spec.architecture(spec) if spec.architecture else None
            model_data = user_data(spec.task, config, values, where)
        except CompressbenchError as exc:
            raise pytest.UsageError(str(exc)) from None
        taken.add(spec.name)
        if model_data is not None:
            data[spec.name] = model_data
        models.append(spec)
    if data_options and not any(not isinstance(m, str) for m in models):
        flags = ", ".join("--" + o.replace("_", "-") for o in data_options)
        raise pytest.UsageError(f"{flags} apply to models given by path or hub id (--models ./my-model or "
                                "hub:org/name); registered models keep their own data")
    return (models if names is not None else None), data


def run_settings(config):
    """The run's settings (compressors.core.settings): defaults < [tool.compressbench] < command line."""
    from pathlib import Path

    from compressors.core.settings import OPTIONS, SettingsError, find_table_file, read_table, resolve_settings

    explicit = config.getoption("--compressbench-config")
    try:
        path = find_table_file(Path(str(config.rootpath)), Path(str(config.invocation_params.dir)), explicit)
        table = read_table(path, required=bool(explicit)) if path else {}
        return resolve_settings({o.name: config.getoption(o.flag) for o in OPTIONS}, table, path)
    except SettingsError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_configure(config):
    from compressors.builders.models import MODELS
    from compressors.builders.techniques import TECHNIQUES

    settings = config.compressbench_settings = run_settings(config)
    names = _split("--models", settings.models, MODELS.describe_names())
    techniques = _split("--techniques", settings.techniques, TECHNIQUES.describe_names())
    models, user_data = user_selection(settings, names)
    config.compressbench_user_data = user_data
    check_selection(models, techniques)
    config.compressbench_selection = Selection(models, techniques)
    _RUN.update(config=config, partial=None, interrupted=None, selected=None, start=time.perf_counter(), plans=None)
    _TIMES.clear()
    from compressors.machine.allocator import settle_malloc

    config.compressbench_malloc = settle_malloc(settings.malloc)
    if hasattr(config, "workerinput"):
        split_threads_among_workers(int(config.workerinput.get("workercount") or 1))
    if not hasattr(config, "workerinput"):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    if getattr(config.option, "numprocesses", None) and getattr(config.option, "benchmark_save", None):
        # pytest-benchmark disables timing under xdist and then saves nothing; say so before any work.
        raise pytest.UsageError(
            f"--benchmark-save={config.option.benchmark_save} with -n {config.option.numprocesses}: pytest-benchmark "
            "turns timing off under pytest-xdist, so nothing would be saved. Run without -n to save a run "
            "(-n is for building artifacts and checking accuracy in parallel, without --benchmark-save).")
    config.compressbench_device = None
    if settings.device is not None:
        from compressors.machine.hardware import DeviceError, detect, parse_device

        try:
            config.compressbench_device = parse_device(settings.device, detect())
        except DeviceError as exc:
            raise pytest.UsageError(str(exc)) from None


def split_threads_among_workers(workers: int) -> int | None:
    """Under pytest-xdist, each of ``workers`` processes gets ``usable cores // workers`` PyTorch
    threads (at least 1), unless ``OMP_NUM_THREADS`` says otherwise; set in ``OMP_NUM_THREADS`` too,
    so the isolated measurement processes a worker starts inherit it. Without it every worker runs
    as many threads as the machine has cores: two MiniLM trainings side by side on 2 cores made 0.85
    steps/s together with 2 threads each, 1.98 with 1 thread each, against 1.48 for one alone
    (AMD EPYC Zen 3, AVX2). Returns the threads set, or None when the user's OMP_NUM_THREADS stands."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    import torch

    from compressors.machine.hardware import detect

    cpu = detect().cpu
    cores = min(count for count in (cpu.physical_cores, cpu.usable_threads, cpu.threads) if count)
    threads = max(1, cores // max(1, workers))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    return threads


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    tiered = [(item, tier) for item in items for tier in TIER_MARKERS if item.get_closest_marker(tier)]
    if not tiered:  # unit tests: no need to ask CUDA
        return
    from compressors.machine.hardware import detect

    hardware, choice = detect(), getattr(config, "compressbench_device", None)
    for item, tier in tiered:
        device, reason = hardware.device_for(tier, choice)
        if device is None:
            item.add_marker(pytest.mark.skip(reason=reason))
        elif tier == "cpu" and not setting(config, "run_slow_kernels"):
            reason = slow_kernel_skip(config, item)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def slow_kernel_skip(config, item) -> str | None:
    """Why a CPU configuration is skipped here: a kernel it rests on is a reference fallback on this
    machine (compressors.machine.kernels.slow_kernel_reason), or None."""
    case = _case_of(item)
    if case is None or not case.chain.kernels:
        return None
    from compressors.machine.kernels import slow_kernel_reason

    probe = kernel_probe(config)
    for kernel in case.chain.kernels:
        reason = slow_kernel_reason(probe, kernel)
        if reason:
            return f"{case.chain.name}: {reason}; --run-slow-kernels to run it anyway"
    return None


def kernel_probe(config) -> dict:
    """This machine's kernel probe (compressors.machine.kernels), measured once per fingerprint and cached."""
    if getattr(config, "compressbench_kernel_probe", None) is None:
        import torch

        from compressors.core.cache import ArtifactCache
        from compressors.machine.hardware import this_cpu
        from compressors.machine.kernels import cached_probe

        root = ArtifactCache(setting(config, "cache_dir")).root
        config.compressbench_kernel_probe = cached_probe(root, this_cpu(), torch.get_num_threads())
    return config.compressbench_kernel_probe


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["compressbench"] = compressbench_machine_info(config)


def compressbench_machine_info(config) -> dict:
    """The hardware found (CPU, ISA features, GPUs, driver), the runtimes' view of it, the
    options that select devices, and the versions of every library that changes a result."""
    from compressors.machine.hardware import detect

    settings = getattr(config, "compressbench_settings", None)
    info = {
        "hardware": detect().to_dict(),
        "versions": library_versions(*MACHINE_INFO_PACKAGES),
        "device_option": setting(config, "device"),
        "on_fallback": setting(config, "on_fallback"),
        "kernel_probe": kernel_probe(config),
        "run_slow_kernels": setting(config, "run_slow_kernels"),
        "settings": settings.to_dict() if settings is not None else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "malloc": getattr(config, "compressbench_malloc", None),
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


def pytest_runtest_logreport(report):
    if report.when == "call":
        from compressors.records.results import ResultRow

        outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
        for name, value in report.user_properties:
            if name == "compressbench_time":  # one test's time by phase (bench/harness.py: run_benchmark)
                _TIMES.append(value)
            if name == "compressbench":
                _ROWS.append(ResultRow.from_extra_info(value["extra_info"], value["median_s"], outcome))
                _keep_partial(report.nodeid, value)


# Result rows of this run (on the xdist controller too: user_properties travel with reports).
_ROWS: list = []
# Each benchmark test's wall time by phase (compressors.machine.timing.TimeAccount), from the reports
# (so on the xdist controller too).
_TIMES: list[dict] = []
# This run's partial file (bench/partial_run.py), how the session ended, when it started.
_RUN: dict = {"config": None, "partial": None, "interrupted": None, "selected": None, "start": None}


def run_time(config) -> dict | None:
    """Where this run's wall time went (compressors.machine.timing.time_breakdown), or None when no benchmark
    test ran. In one process the session's own account (it also holds the end-of-run re-timing);
    under pytest-xdist the workers' tests, summed."""
    if _RUN["start"] is None or not _TIMES:
        return None
    from compressors.machine.timing import time_breakdown

    workers = getattr(config.option, "numprocesses", None)
    workers = workers if isinstance(workers, int) and workers > 1 else 1
    session = getattr(config, "compressbench_bench_session", None)
    shares = [session.account.seconds] if session is not None and workers == 1 else _TIMES
    return time_breakdown(shares, time.perf_counter() - _RUN["start"], workers=workers)


def _keep_partial(nodeid: str, value: dict) -> None:
    config = _RUN["config"]
    if config is None or hasattr(config, "workerinput"):  # xdist workers: the controller keeps it
        return
    if _RUN["partial"] is None:
        from bench.partial_run import PartialRun, storage_folder

        try:
            storage = storage_folder(config.getoption("benchmark_storage", None))
        except ValueError:
            return
        _RUN["partial"] = PartialRun(storage, config.getoption("benchmark_save", None), _RUN["selected"])
    _RUN["partial"].add(nodeid, value["median_s"], value["extra_info"])


def pytest_collection_finish(session):
    _RUN["selected"] = len(session.items)


def pytest_report_collectionfinish(config, start_path, items):
    """Before the first build (and with --collect-only): one plan line per model given by path or hub id,
    what the run will build, train and measure for it and about how long (bench/plan.py)."""
    user_models = [m for m in (getattr(config, "compressbench_selection", None) or Selection(None, None)).models or []
                   if not isinstance(m, str)]
    if not user_models or hasattr(config, "workerinput"):
        return None
    from bench.plan import plan_model
    from compressors.core.cache import ArtifactCache
    from compressors.machine.hardware import this_cpu

    runnable = {}
    for item in items:
        case = _case_of(item)
        if case is not None and not item.get_closest_marker("skip") and case.tier == "cpu":
            runnable.setdefault(case.model.name, []).append(case)
    lines, plans = [], []
    for model in user_models:
        data = (getattr(config, "compressbench_user_data", None) or {}).get(model.name)
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
    _RUN["plans"] = plans
    return lines


def _case_of(item):
    params = getattr(getattr(item, "callspec", None), "params", {})
    return next((v for v in params.values() if hasattr(v, "chain") and hasattr(v, "scenario")), None)


def _sigterm_to_interrupt(signum, frame):
    """SIGTERM (``timeout``, a cancelled CI job) ends the session like Ctrl-C: finished results are kept
    and marked partial, the measurement process dies with us, temporary folders are removed."""
    _RUN["interrupted"] = "SIGTERM"
    raise KeyboardInterrupt


def pytest_keyboard_interrupt(excinfo):
    _RUN["interrupted"] = _RUN["interrupted"] or "Ctrl-C"


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Mark a run saved on the way out of an interrupted session as partial (it lacks configurations)."""
    interrupted = _RUN["interrupted"]
    output_json["compressbench"] = {"partial": bool(interrupted), "status": f"interrupted ({interrupted})"
                                    if interrupted else "complete", "tests_selected": _RUN["selected"],
                                    "tests_finished": len(_ROWS), "time_s": run_time(config),
                                    "plans": _RUN.get("plans") or None, "remote_cache": _remote_summary(config)}


def _remote_summary(config) -> dict | None:
    remote = getattr(config, "compressbench_remote", None)
    return None if remote is None else remote.summary()


def pytest_sessionfinish(session, exitstatus):
    partial = _RUN["partial"]
    if partial is not None:
        interrupted = _RUN["interrupted"] or (exitstatus == pytest.ExitCode.INTERRUPTED and "interrupted")
        kept = partial.finish(bool(interrupted), interrupted or None)
        if kept is not None:
            session.config.compressbench_partial_file = kept


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tr = terminalreporter
    kept = getattr(config, "compressbench_partial_file", None)
    if kept is not None:
        tr.write_line(f"compressbench: run interrupted; the {len(_ROWS)} finished configuration(s) "
                      f"are kept in {kept} (marked partial)", yellow=True)
    if _ROWS:
        from compressors.records.tables import format_table, terminal_legend

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
        tr.write_line(terminal_legend())
    remote = getattr(config, "compressbench_remote", None)
    if remote is not None:
        tr.write_line(remote.summary_line(), yellow=not remote.enabled)
    breakdown = run_time(config)  # also when every benchmark was skipped or failed: the time was spent
    if breakdown is not None:
        from compressors.machine.timing import format_breakdown

        tr.write_line(format_breakdown(breakdown))


# Errors raised on purpose carry a message meant for the user: show it without a traceback.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and isinstance(call.excinfo.value, CompressbenchError) and report.failed:
        report.longrepr = f"{type(call.excinfo.value).__name__}: {call.excinfo.value}"
