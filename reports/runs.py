"""Find, load and tabulate saved runs.

A run is named as pytest-benchmark names it: its number (``0001``), its save
name (``run1``) or a path to the JSON file; no name means the latest run in the
storage folder (``.benchmarks/`` by default).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

from compressors import CompressbenchError
from compressors.records.results import ResultRow, latency_summary

DEFAULT_STORAGE = Path(".benchmarks")


class RunNotFound(CompressbenchError):
    pass


class CorruptRun(CompressbenchError):
    """A saved run that is not pytest-benchmark JSON (truncated, hand-edited, another tool's file)."""


class SkippedRunWarning(UserWarning):
    """A run named or found was skipped (corrupt); the others are still used."""


def saved_runs(storage: Path = DEFAULT_STORAGE) -> list[Path]:
    """Every saved run file, oldest first (pytest-benchmark numbers them)."""
    return sorted(storage.glob("*/[0-9][0-9][0-9][0-9]_*.json"), key=lambda p: (p.name, str(p)))


def find_run(name: str | None, storage: Path = DEFAULT_STORAGE) -> Path:
    runs = saved_runs(storage)
    if name and Path(name).is_file():
        return Path(name)
    if not runs:
        raise RunNotFound(f"no saved runs in {storage}/; save one with pytest bench -m cpu --benchmark-save=NAME")
    if name is None:
        return runs[-1]
    matches = [p for p in runs if name in (p.stem, *p.stem.split("_", 1))]  # 0001_run1, 0001 or run1
    if not matches:
        raise RunNotFound(f"no saved run {name!r} in {storage}/; saved: {', '.join(p.stem for p in runs)}")
    return matches[-1]


def find_runs(names: list[str] | None, storage: Path = DEFAULT_STORAGE) -> list[Path]:
    """The runs ``names`` name, in order; none named: the latest run of each machine folder.

    pytest-benchmark keeps one folder per machine/interpreter (``Linux-CPython-3.11-64bit``), so
    "the latest runs" are the newest file of each folder, oldest folder first.
    """
    if names:
        return [find_run(name, storage) for name in names]
    runs = saved_runs(storage)
    if not runs:
        find_run(None, storage)  # raises with what to do
    by_folder: dict[Path, list[Path]] = {}
    for path in runs:
        by_folder.setdefault(path.parent, []).append(path)
    latest = []
    for paths in by_folder.values():
        for path in reversed(paths):  # the newest run of the folder that can be read
            try:
                load_run(path)
            except CorruptRun as exc:
                warnings.warn(f"skipped {exc}", SkippedRunWarning, stacklevel=2)
                continue
            latest.append(path)
            break
    if not latest:
        raise CorruptRun(f"none of the runs in {storage}/ could be read: {', '.join(str(p) for p in runs)}")
    return sorted(latest, key=lambda p: (p.name, str(p)))


@dataclasses.dataclass(frozen=True)
class Run:
    """One saved run: its file, a short label (``0006_issue34``) and the parsed JSON."""

    path: Path
    data: dict

    @property
    def label(self) -> str:
        return self.path.stem

    @property
    def machine(self) -> dict:
        return self.data.get("machine_info") or {}

    @property
    def commit(self) -> dict:
        return self.data.get("commit_info") or {}

    @property
    def time_spent(self) -> dict | None:
        """Where the run's wall time went (compressors.machine.timing.time_breakdown), when it recorded it."""
        return (self.data.get("compressbench") or {}).get("time_s")

    def machine_caption(self) -> str:
        """One line naming where and when the run was measured: the CPU with its ISA flags and cores, the kernel
        probe's figures, the main libraries, the commit and the date (what every published figure stands beside)."""
        bench = self.machine.get("compressbench") or {}
        cpu = (bench.get("hardware") or {}).get("cpu") or {}
        brand = cpu.get("name") or (self.machine.get("cpu") or {}).get("brand_raw") or "unknown CPU"
        flags = " ".join(cpu.get("flags") or []) or "none recorded"
        cores = f"{cpu.get('physical_cores', '?')} cores, {cpu.get('usable_threads', cpu.get('threads', '?'))} threads"
        parts = [f"{brand}; ISA: {flags}; {cores}"]
        kernels = (bench.get("kernel_probe") or {}).get("kernels") or {}
        probe = [f"{name} {kernels[name]['gops']:,.0f}" for name in ("fp32-gemm", "int8-int-mm", "bf16-gemm")
                 if isinstance(kernels.get(name), dict) and kernels[name].get("gops") is not None]
        if probe:
            parts.append("kernel probe G(FL)OP/s: " + ", ".join(probe))
        versions = bench.get("versions") or {}
        libraries = [f"{name} {versions[name]}" for name in ("torch", "onnxruntime", "openvino") if versions.get(name)]
        if libraries:
            parts.append(", ".join(libraries))
        commit = (self.commit.get("id") or "")[:10]
        saved = str(self.data.get("datetime") or "")[:10]
        dirty = " (dirty)" if self.commit.get("dirty") else ""
        parts.append(f"commit {commit or 'unknown'}{dirty}, saved {saved or '?'}")
        return " · ".join(parts)

    @property
    def partial(self) -> str | None:
        """Why this run is incomplete (interrupted, or a partial file kept as it went), or None."""
        marker = self.data.get("compressbench") or {}
        if not marker.get("partial"):
            return None
        return (f"{marker.get('status', 'partial')}: {marker.get('tests_finished', '?')} of "
                f"{marker.get('tests_selected', '?')} selected tests finished")


def load_run(path: Path) -> Run:
    """Parse one run; a file that is not pytest-benchmark JSON raises :class:`CorruptRun` naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptRun(f"{path}: not a readable pytest-benchmark JSON file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise CorruptRun(f"{path}: not a pytest-benchmark run (no 'benchmarks' list)")
    return Run(Path(path), data)


def load_runs(paths: list[Path]) -> list[Run]:
    """Every loadable run of ``paths``; a corrupt one is skipped with a :class:`SkippedRunWarning` naming it."""
    runs = []
    for path in paths:
        try:
            runs.append(load_run(path))
        except CorruptRun as exc:
            warnings.warn(f"skipped {exc}", SkippedRunWarning, stacklevel=2)
    if not runs:
        raise CorruptRun(f"none of the runs could be read: {', '.join(str(p) for p in paths)}")
    return runs


def benchmark_rows(run: Run) -> list[ResultRow]:
    """One typed row per compressbench benchmark of ``run`` (:meth:`ResultRow.from_extra_info`),
    with pytest-benchmark's median.

    Percentiles come from the suite's ``extra_info["latency_s"]``, else from the per-round
    timings pytest-benchmark saves with ``--benchmark-save-data``; runs with neither get ``None``.
    Benchmarks without compressbench's ``extra_info`` (no model, technique, tier, batch size) are
    left out.
    """
    rows = []
    for bench in run.data["benchmarks"]:
        if not isinstance(bench, dict) or not ResultRow.is_result(bench.get("extra_info")):
            continue
        stats = bench.get("stats") or {}
        row = ResultRow.from_extra_info(bench["extra_info"], median_s=stats.get("median"), outcome="saved")
        if row.latency.latency_s is None and stats.get("data"):
            row = row.replace(latency={"latency_s": latency_summary(stats["data"])})
        rows.append(row)
    return rows


def rows_from_run(path: Path) -> list[ResultRow]:
    """The typed rows of the run saved in ``path``."""
    return benchmark_rows(load_run(path))
