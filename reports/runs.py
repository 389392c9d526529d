"""Find, load and tabulate saved runs.

A run is named as pytest-benchmark names it: its number (``0001``), its save
name (``run1``) or a path to the JSON file; no name means the latest run in the
storage folder (``.benchmarks/`` by default).
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

from compressors import CompressbenchError

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
    matches = [p for p in runs if p.stem.split("_", 1)[0] == name or p.stem.split("_", 1)[-1] == name]
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
    latest: dict[Path, Path] = {}
    for path in runs:
        latest[path.parent] = path
    return sorted(latest.values(), key=lambda p: (p.name, str(p)))


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


def config_id(info: dict) -> str:
    """``model-technique-tier-bsN`` (``-scenario`` for language models: ``-prefill512``, ``-gen32``),
    the test id of the configuration (what ``-k`` matches)."""
    scenario = f"-{info['scenario']}" if info.get("scenario") else ""
    return f"{info['model']}-{info['technique']}-{info['tier']}-bs{info['batch_size']}{scenario}"


def percentile(data: list[float], pct: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method) of per-round timings; ``None`` without data."""
    if not data:
        return None
    ordered = sorted(data)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(data: list[float]) -> dict:
    """What the suite saves in ``extra_info["latency_s"]``: percentiles of the per-round timings (seconds)."""
    return {"rounds": len(data), **{f"p{p}": percentile(data, p) for p in (50, 90, 99)}}


def benchmark_rows(run: Run) -> list[dict]:
    """One flat row per compressbench benchmark of ``run``: extra_info plus latency, missing fields ``None``.

    Percentiles come from the suite's ``extra_info["latency_s"]``, else from the per-round
    timings pytest-benchmark saves with ``--benchmark-save-data``; runs with neither get ``None``.
    Benchmarks without compressbench's ``extra_info`` (no ``model``) are left out.
    """
    rows = []
    for bench in run.data["benchmarks"]:
        if not isinstance(bench, dict):
            continue
        info = dict(bench.get("extra_info") or {})
        if not all(info.get(k) is not None for k in ("model", "technique", "tier", "batch_size")):
            continue
        stats = bench.get("stats") or {}
        saved = info.get("latency_s") or {}
        data = stats.get("data") or []
        meta = info.get("artifact_meta") or {}
        training = meta.get("training") or {}
        row = {
            "run": run.label,
            "id": config_id(info),
            "device": info.get("device") or info["tier"],
            "median_s": stats.get("median"),
            "p90_s": saved.get("p90") if saved.get("p90") is not None else percentile(data, 90),
            "p99_s": saved.get("p99") if saved.get("p99") is not None else percentile(data, 99),
            "rounds": stats.get("rounds"),
            "training_s": training.get("wall_seconds"),
            "sensitivity": meta.get("sensitivity"),
            "sensitivity_key": meta.get("sensitivity_artifact"),
        }
        for key in ("accuracy_pct", "baseline_accuracy_pct", "accuracy_drop_pp", "perplexity", "baseline_perplexity",
                    "perplexity_increase_pct", "per_token_s", "scenario", "size_bytes", "size_ratio_vs_fp32",
                    "peak_memory_bytes"):
            row[key] = info.get(key)
        rows.append({**info, **row})
    return rows


def rows_from_run(path: Path) -> list[dict]:
    """One row per benchmark: compressbench's extra_info plus the median latency."""
    data = json.loads(path.read_text())
    rows = []
    for bench in data.get("benchmarks", []):
        info = dict(bench.get("extra_info") or {})
        if "model" not in info:
            continue
        info["median_s"] = (bench.get("stats") or {}).get("median")
        info["outcome"] = "saved"
        rows.append(info)
    return rows


def _mb(value) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def _quality(row: dict) -> tuple[str, str]:
    """(accuracy % or perplexity, drop in pp or perplexity rise in %) of a row, formatted."""
    if row.get("accuracy_pct") is not None:
        return f"{row['accuracy_pct']:.2f}", f"{row['accuracy_drop_pp']:.2f}"
    if row.get("perplexity") is not None:
        return f"{row['perplexity']:.3f}", f"{row['perplexity_increase_pct']:+.2f}%"
    return "-", "-"


def format_table(rows: list[dict]) -> list[str]:
    """The results table the suite prints and ``python -m reports table`` shows.

    Classifiers show accuracy and its drop in pp; language models perplexity and its rise in %,
    and their generation rows the time per generated token.
    """
    width = max([44] + [len(config_id(row)) for row in rows])
    lines = [f"{'configuration':<{width}} {'median ms':>10} {'ms/tok':>7} {'acc/ppl':>8} {'drop':>8} "
             f"{'size MB':>8} {'size x':>7} {'mem MB':>7}  verdict"]
    for row in sorted(rows, key=lambda r: (r["model"], r["tier"], r["batch_size"], r.get("scenario") or "",
                                           r["technique"])):
        median = "-" if row.get("median_s") is None else f"{row['median_s'] * 1e3:.2f}"
        per_token = "" if row.get("per_token_s") is None else f"{row['per_token_s'] * 1e3:.2f}"
        quality, drop = _quality(row)
        lines.append(
            f"{config_id(row):<{width}} {median:>10} {per_token:>7} {quality:>8} {drop:>8} "
            f"{_mb(row['size_bytes']):>8} {row['size_ratio_vs_fp32']:>7.3f} {_mb(row['peak_memory_bytes']):>7}"
            f"  {row.get('outcome', '')}"
        )
    return lines


LEGEND = ("acc/ppl: SST-2 dev accuracy % (872 sentences), or WikiText-2 test perplexity (language models); "
          "drop: fp32 minus this in pp, or perplexity rise vs fp32 in %; ms/tok: generation median / new tokens; "
          "size x: vs fp32; "
          "mem: peak RSS of a fresh process while it loads + evaluates, above its RSS after importing the runtime.")
