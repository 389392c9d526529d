"""The isolated measurement: accuracy or perplexity and peak memory of an artifact, measured in a fresh
process (:mod:`compressors.evaluation.probe`) that loads it from its files, so the memory figure is that of
loading and evaluating only (definitions: :mod:`compressors.quality.metrics`, docs/metrics.md).

The launcher lives here, beside the process it starts, and names it by importing it (``probe.__name__``),
not by a string: a module of a lower layer that needs an isolated measurement is handed
:func:`measure_isolated` (or a ``compute`` callable, as :func:`compressors.quality.metrics.stored_measurement`
takes) by its caller.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from compressors.core.cache import Artifact
from compressors.core.scratch import scratch_dir
from compressors.evaluation import probe
from compressors.execution.runtime import loader_for
from compressors.machine.gpu_memory import nonnegative_delta
from compressors.quality.metrics import EvalSet, MeasurementError, TokenWindows

PROBE_TIMEOUT_S = 1800


class MeasurementTimeout(MeasurementError):
    """A measurement process ran past its time guard and was killed."""


def die_with_parent() -> None:
    """In a child process (``preexec_fn``): ask Linux to SIGKILL it when its parent dies, so a killed
    pytest (kill -9, SIGTERM from ``timeout`` or a cancelled CI job) leaves no measurement running."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux/glibc: the parent's watchdog in compressors.evaluation.probe covers it
        pass


def _run_probe(request: dict, timeout: int = PROBE_TIMEOUT_S) -> dict:
    with scratch_dir("probe") as tmp:
        req, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps({**request, "result_file": str(result), "parent_pid": os.getpid()}))
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])  # the folder holding compressors/
        env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            proc = subprocess.run([sys.executable, "-m", probe.__name__, str(req)], capture_output=True, text=True,
                                   timeout=timeout, env=env, preexec_fn=die_with_parent)
        except subprocess.TimeoutExpired:  # run() killed and reaped it; the folder goes with this block
            raise MeasurementTimeout(f"measurement of {request.get('artifact', request['runtime'])} stopped after "
                                     f"{timeout:g} s (--max-measure-seconds={timeout:g}): the process was killed; "
                                     "raise --max-measure-seconds to let it finish") from None
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise MeasurementError(
                f"measurement process for {request.get('artifact', request['runtime'])} failed "
                f"(exit {proc.returncode}):\n{tail}"
            )
        if not result.is_file():
            raise MeasurementError(f"measurement process exited 0 but wrote no result; stdout: {proc.stdout[-500:]!r}")
        return json.loads(result.read_text())


@functools.cache
def runtime_baseline_rss(runtime: str, device: str = "cpu") -> int:
    """Peak RSS (bytes) of a fresh process that only imports ``runtime``."""
    return int(_run_probe({"mode": "import-only", "runtime": runtime, "device": device})["peak_rss_bytes"])


def measure_isolated(artifact: Artifact, eval_set: EvalSet | TokenWindows, device: str = "cpu",
                     timeout: float = PROBE_TIMEOUT_S) -> dict:
    """Accuracy (an :class:`EvalSet`) or perplexity (:class:`TokenWindows`) and memory of
    ``artifact``, measured in a fresh process.

    Returns a dict with ``accuracy`` (%) or ``perplexity`` / ``mean_nll`` / ``predicted_tokens``,
    ``peak_rss_bytes`` (loaded + evaluated),
    ``runtime_rss_bytes`` (import-only baseline), ``peak_memory_bytes`` (their
    difference), ``placement``, and on CUDA ``vram_after_load_bytes`` / ``vram_peak_bytes``.
    """
    runtime = loader_for(artifact).runtime
    with scratch_dir("eval") as tmp:
        eval_file = Path(tmp) / "eval.npz"
        eval_set.save(eval_file)
        result = _run_probe(
            {
                "mode": "evaluate",
                "runtime": runtime,
                "device": device,
                "eval_kind": eval_set.kind,
                "artifact": str(artifact.path),
                "eval_file": str(eval_file),
            },
            timeout=timeout,
        )
    baseline = runtime_baseline_rss(runtime, device)
    result["runtime_rss_bytes"] = baseline
    flags = result.setdefault("memory_flags", [])  # a negative difference is never reported as memory use
    if result.get("hwm_reset"):
        result["peak_memory_bytes"] = nonnegative_delta(
            "peak_memory", result["peak_rss_since_imports_bytes"], result["rss_after_imports_bytes"], flags
        )
        result["memory_method"] = "rss-high-water-mark-after-imports"
    else:
        result["peak_memory_bytes"] = nonnegative_delta("peak_memory", result["peak_rss_bytes"], baseline, flags)
        result["memory_method"] = "peak-rss-minus-import-only-process"
    return result


# --------------------------------------------------------------------------- the measurement version
# Stored measurements are keyed on it (compressors.quality.metrics.stored_measurement). It is derived, never
# bumped by hand: a digest of the names of the metrics the process measures (those declared ``isolated`` in
# compressors.records.metric_table) and of the code that measures them (measurement_code), read as syntax trees
# without docstrings, so a comment leaves it alone while a new isolated metric or an edited formula changes it and
# every stored measurement is taken again once (so does a Python release that writes syntax trees differently:
# a spare measurement, never a stale one).


def code_identity(obj) -> str:
    """The syntax tree of a module's or function's source without its docstrings: what it does, not how it is
    commented or laid out."""
    import ast  # here, not at the top: the measuring process imports as little as it can
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)


def measurement_code() -> list:
    """The code whose identity is in the measurement version: the measuring process, how it is launched, how peak
    memory is read and derived,
    how accuracy and perplexity are computed from a model's outputs."""
    from compressors.machine import process_memory
    from compressors.quality import metrics

    return [probe, process_memory, measure_isolated, metrics.predict_labels, metrics.perplexity,
            metrics.sequence_nll]


@functools.cache
def _code_digest() -> str:
    return hashlib.sha256("\n".join(code_identity(obj) for obj in measurement_code()).encode()).hexdigest()


def measurement_version(isolated: list[str] | None = None) -> str:
    """The version in a stored measurement's key (see the module docstring): the names of the metrics the
    isolated process measures (``isolated``, default: the table of metrics') and the digest of its code."""
    if isolated is None:
        from compressors.records.metric_table import isolated_metric_names

        isolated = isolated_metric_names()
    text = json.dumps({"metrics": sorted(isolated), "code": _code_digest()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
