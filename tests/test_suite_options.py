"""The suite's command line: selection, validation, ids, markers, saved runs (collection only, no building)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_pytest(*args, cwd=ROOT, env_extra=None):
    import os

    # A child run is its own session, also when this one is an xdist worker (pytest-benchmark
    # turns itself off in workers it thinks are its own).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")} | (env_extra or {})
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=300)


def test_ids_name_model_technique_device_and_batch():
    out = run_pytest("bench", "--collect-only", "-q", "-m", "cpu")
    assert out.returncode == 0, out.stdout + out.stderr
    for expected in ("minilm-sst2-fp32-cpu-bs1", "minilm-sst2-dynamic-int8-cpu-bs32", "minilm-sst2-onnx-fp32-cpu-bs1",
                     "minilm-sst2-onnx-int8-cpu-bs32", "distilbert-sst2-onnx-int8-cpu-bs32"):
        assert f"[{expected}]" in out.stdout


def test_k_and_models_and_techniques_select():
    out = run_pytest("bench", "--collect-only", "-q", "-m", "cpu", "--models", "minilm-sst2",
                     "--techniques", "fp32,onnx-int8", "-k", "bs32")
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    assert sorted(i.split("[")[1].rstrip("]") for i in ids) == ["minilm-sst2-fp32-cpu-bs32", "minilm-sst2-onnx-int8-cpu-bs32"]


def test_smoke_subset_includes_an_onnx_and_a_language_model_configuration():
    out = run_pytest("bench", "--collect-only", "-q", "-m", "smoke")
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    assert 3 <= len(ids) <= 8 and any("onnx" in i for i in ids)
    assert {"smollm2-135m-fp32-cpu-bs1-prefill512", "smollm2-135m-fp32-cpu-bs1-gen32"} <= {
        i.split("[")[1].rstrip("]") for i in ids}


def test_language_model_ids_and_markers():
    out = run_pytest("bench/test_language_model.py", "--collect-only", "-q", "--models", "smollm2-135m,gpt2",
                     "--techniques", "fp32,bnb-nf4,onnx-int8", "-m", "cpu and not slow")
    ids = sorted(line.split("[")[1].rstrip("]") for line in out.stdout.splitlines() if "::" in line)
    assert out.returncode == 0, out.stdout + out.stderr
    expected = sorted(f"{m}-{t}-cpu-bs1-{s}" for m in ("smollm2-135m", "gpt2") for t in ("fp32", "bnb-nf4", "onnx-int8")
                      for s in ("prefill512", "gen32"))
    assert ids == expected  # the full-test-set variant is slow; onnx-int8 is collected and skipped below
    slow = run_pytest("bench/test_language_model.py", "--collect-only", "-q", "--models", "smollm2-135m",
                      "--techniques", "fp32", "-m", "slow")
    assert "[smollm2-135m-fp32-cpu-bs1-prefill512-fullppl]" in slow.stdout
    hub = run_pytest("bench/test_language_model.py", "--collect-only", "-q", "--models", "gpt2", "-m", "hub")
    assert "[gpt2-fp32-cpu-bs1-prefill512]" in hub.stdout
    skipped = run_pytest("bench/test_language_model.py", "-q", "-rs", "--models", "smollm2-135m",
                         "--techniques", "onnx-int8", "-k", "prefill512 and not fullppl")
    assert "onnx-int8 does not apply to causal-lm models" in skipped.stdout, skipped.stdout[-2000:]


@pytest.mark.parametrize("args, message", [
    (["--models", "minilm-sst2,gpt7"], "unknown model 'gpt7'; valid models: minilm-sst2"),
    (["--techniques", "int3"], "unknown technique 'int3'"),
    (["--techniques", "onnx-fp32+dynamic-int8"], "'dynamic-int8' needs a float PyTorch model"),
])
def test_bad_names_are_usage_errors_listing_choices(args, message):
    out = run_pytest("bench", "--collect-only", "-q", *args)
    assert out.returncode == 4
    assert message in out.stderr and "Traceback" not in out.stderr


def test_missing_data_dir_stops_the_run_with_one_message(tmp_path):
    out = run_pytest("bench", "-k", "minilm-sst2-fp32-cpu-bs1", "--data-dir", str(tmp_path / "nowhere"),
                     "--cache-dir", str(tmp_path / "cache"))
    assert out.returncode == 4, out.stdout[-2000:]
    text = out.stdout + out.stderr
    assert "nowhere" in text and "does not exist" in text and "--data-dir" in text and "Traceback" not in text


def test_absent_gpu_tier_is_skipped_with_reason():
    out = run_pytest("bench", "-m", "t4", "--models", "minilm-sst2", "--techniques", "fp32", "-rs", "-q")
    assert out.returncode == 0
    assert "needs the t4 tier" in out.stdout or "runs on ['cpu']" in out.stdout


def test_saved_runs_are_numbered_never_overwritten(tmp_path):
    # pytest-benchmark numbers every save; a second save with the same name adds a file.
    (tmp_path / "test_x.py").write_text("def test_x(benchmark):\n    benchmark(sum, [1, 2])\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    for _ in range(2):
        out = run_pytest("test_x.py", "--benchmark-save=run1", "--benchmark-storage", str(tmp_path / ".b"), cwd=tmp_path)
        assert out.returncode == 0, out.stdout
    saved = sorted(p.name for p in (tmp_path / ".b").rglob("*.json"))
    assert [name[:4] for name in saved] == ["0001", "0002"] and all(name.endswith("_run1.json") for name in saved)


def test_compressbench_errors_are_reported_without_traceback(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the conftest's plugins from this checkout, not an installed copy
    pytester.makeconftest((ROOT / "conftest.py").read_text())
    pytester.makepyfile(test_raises="""
        from compressors.data import DataError

        def test_it():
            raise DataError("dev.tsv is missing; use --data-dir")
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*DataError: dev.tsv is missing; use --data-dir*"])
    assert "raise DataError" not in result.stdout.str()
