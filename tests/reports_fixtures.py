"""Saved runs written by pytest-benchmark itself, from a tiny fake suite that fills ``extra_info`` as bench/ does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from compressors.records.results import Identity, Placement, Provenance, Quality, ResultRow, SizeMemory

ROOT = Path(__file__).resolve().parents[1]

FAKE_SUITE = '''
import json, os
import pytest
from compressors.records.results import latency_summary

CASES = json.loads(os.environ["FAKE_CASES"])

def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["node"] = os.environ.get("FAKE_NODE", machine_info.get("node"))
    machine_info["compressbench"] = {"hardware": {"cpu_count": 2, "tiers": ["cpu"]},
                                     "versions": {"torch": "2.13.0+cpu", "transformers": "5.0"}}
'''

FAKE_TEST = '''
import pytest
from conftest import CASES, latency_summary

@pytest.mark.parametrize("info", CASES, ids=[f"{c['model']}-{c['technique']}-cpu-bs{c['batch_size']}" for c in CASES])
def test_classification(info, benchmark):
    benchmark.extra_info.update(info)
    benchmark(sum, range(10 * info["batch_size"]))
    if benchmark.stats:
        benchmark.extra_info["latency_s"] = latency_summary(benchmark.stats.stats.data)
'''


def case(technique: str, batch_size: int, **changes) -> dict:
    """extra_info as bench/ saves it (a :class:`ResultRow`'s), for a fake model ``tiny``; ``changes``
    are flat field names."""
    fp32_size = 4 * 2**20
    size = {"fp32": fp32_size, "onnx-int8": 2**20, "layerdrop-2": 3 * 2**20}.get(technique, 2 * 2**20)
    meta = {}
    if technique == "fp32":
        meta = {"training": {"wall_seconds": 12.5}}
    if technique == "layerdrop-2":
        meta = {"sensitivity_artifact": "abc", "training": {"wall_seconds": 3.0},
                "sensitivity": [{"layer": 0, "accuracy_pct": 80.0, "drop_pp": 10.0},
                                {"layer": 1, "accuracy_pct": 89.0, "drop_pp": 1.0}]}
    row = ResultRow(
        identity=Identity(model="tiny", technique=technique, tier="cpu", device="cpu", batch_size=batch_size,
                          task="sequence-classification"),
        quality=Quality(accuracy_pct=90.0, baseline_accuracy_pct=90.0, accuracy_drop_pp=0.0),
        size=SizeMemory(size_bytes=size, size_ratio_vs_fp32=round(size / fp32_size, 4), peak_memory_bytes=100 * 2**20),
        placement=Placement(placement={"runtime": "torch"}),
        provenance=Provenance(artifact_meta=meta, budget={"max_accuracy_drop_pp": 1.0}),
    )
    info = row.to_extra_info()
    info.update(changes)
    for key, value in changes.items():
        if value is None:
            del info[key]
    if "accuracy_pct" in changes:
        info["accuracy_drop_pp"] = round(info["baseline_accuracy_pct"] - info["accuracy_pct"], 3)
    return info


def base_cases() -> list[dict]:
    return [case(t, b) for t in ("fp32", "onnx-int8", "layerdrop-2") for b in (1, 32)]


def write_fake_suite(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "conftest.py").write_text(FAKE_SUITE)
    (folder / "test_fake.py").write_text(FAKE_TEST)
    return folder


def run_fake_suite(folder: Path, storage: Path, cases: list[dict], *args: str, node: str | None = None):
    """Run the fake suite once (saving with ``--benchmark-save`` when given in ``args``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env["FAKE_CASES"] = json.dumps(cases)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(folder)])  # this checkout's reports, the fake conftest
    if node:
        env["FAKE_NODE"] = node
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(folder),
                           f"--benchmark-storage=file://{storage}", "--benchmark-min-rounds=5",
                           "--benchmark-max-time=0.0001", "--benchmark-warmup=off", *args],
                          cwd=folder, capture_output=True, text=True, env=env, timeout=120)


def save_run(folder: Path, storage: Path, name: str, cases: list[dict], node: str | None = None) -> Path:
    out = run_fake_suite(folder, storage, cases, f"--benchmark-save={name}", node=node)
    assert out.returncode == 0, out.stdout + out.stderr
    (path,) = [p for p in storage.glob(f"*/*_{name}.json")]
    return path
