"""Find, load and tabulate saved runs.

A run is named as pytest-benchmark names it: its number (``0001``), its save
name (``run1``) or a path to the JSON file; no name means the latest run in the
storage folder (``.benchmarks/`` by default).
"""

from __future__ import annotations

import json
from pathlib import Path

from compressors import CompressbenchError

DEFAULT_STORAGE = Path(".benchmarks")


class RunNotFound(CompressbenchError):
    pass


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


def format_table(rows: list[dict]) -> list[str]:
    """The results table the suite prints and ``python -m reports table`` shows."""
    lines = [f"{'configuration':<44} {'median ms':>10} {'acc %':>7} {'drop pp':>8} "
             f"{'size MB':>8} {'size x':>7} {'mem MB':>7}  verdict"]
    for row in sorted(rows, key=lambda r: (r["model"], r["tier"], r["batch_size"], r["technique"])):
        config_id = f"{row['model']}-{row['technique']}-{row['tier']}-bs{row['batch_size']}"
        median = "-" if row.get("median_s") is None else f"{row['median_s'] * 1e3:.2f}"
        lines.append(
            f"{config_id:<44} {median:>10} {row['accuracy_pct']:>7.2f} {row['accuracy_drop_pp']:>8.2f} "
            f"{_mb(row['size_bytes']):>8} {row['size_ratio_vs_fp32']:>7.3f} {_mb(row['peak_memory_bytes']):>7}"
            f"  {row.get('outcome', '')}"
        )
    return lines


LEGEND = ("acc: SST-2 dev (872); drop: fp32 minus this, pp; size x: vs fp32; "
          "mem: peak RSS of a fresh process while it loads + evaluates, above its RSS after importing the runtime.")
