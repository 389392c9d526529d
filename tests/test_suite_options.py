"""The suite's command line: selection, validation, ids, markers, saved runs (collection only, no building)."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SUITE_PLUGINS

ROOT = Path(__file__).resolve().parents[1]


def run_pytest(*args, cwd=ROOT, env_extra=None):
    import os

    # A child run is its own session, also when this one is an xdist worker (pytest-benchmark
    # turns itself off in workers it thinks are its own).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")} | (env_extra or {})
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_ids_name_model_technique_device_and_batch():
    out = run_pytest("bench", "--collect-only", "-q", "-m", "cpu")
    assert out.returncode == 0, out.stdout + out.stderr
    for expected in ("minilm-sst2-fp32-cpu-bs1", "minilm-sst2-dynamic-int8-cpu-bs32", "minilm-sst2-onnx-fp32-cpu-bs1",
                     "minilm-sst2-onnx-int8-cpu-bs32", "distilbert-sst2-onnx-int8-cpu-bs32"):
        assert f"[{expected}]" in out.stdout


@pytest.mark.slow
def test_k_and_models_and_techniques_select():
    out = run_pytest("bench", "--collect-only", "-q", "-m", "cpu", "--models", "minilm-sst2",
                     "--techniques", "fp32,onnx-int8", "-k", "bs32")
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    assert sorted(i.split("[")[1].rstrip("]") for i in ids) == [
        "minilm-sst2-fp32-cpu-bs32",
        "minilm-sst2-onnx-int8-cpu-bs32",
    ]


@pytest.mark.slow
def test_smoke_subset_includes_an_onnx_and_a_language_model_configuration():
    out = run_pytest("bench", "--collect-only", "-q", "-m", "smoke")
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    assert 3 <= len(ids) <= 8 and any("onnx" in i for i in ids) and any("openvino" in i for i in ids)
    assert {"smollm2-135m-fp32-cpu-bs1-prefill512", "smollm2-135m-fp32-cpu-bs1-gen32"} <= {
        i.split("[")[1].rstrip("]") for i in ids
    }


@pytest.mark.slow
def test_language_model_ids_and_markers():
    out = run_pytest(
        "bench/test_language_model.py",
        "--collect-only",
        "-q",
        "--models",
        "smollm2-135m,gpt2",
        "--techniques",
        "fp32,bnb-nf4,onnx-int8",
        "-m",
        "cpu and not slow",
    )
    ids = sorted(line.split("[")[1].rstrip("]") for line in out.stdout.splitlines() if "::" in line)
    assert out.returncode == 0, out.stdout + out.stderr
    expected = sorted(
        f"{m}-{t}-cpu-bs1-{s}"
        for m in ("smollm2-135m", "gpt2")
        for t in ("fp32", "bnb-nf4", "onnx-int8")
        for s in ("prefill512", "gen32")
    )
    assert ids == expected  # the full-test-set variant is slow; onnx-int8 is collected and skipped below
    slow = run_pytest(
        "bench/test_language_model.py",
        "--collect-only",
        "-q",
        "--models",
        "smollm2-135m",
        "--techniques",
        "fp32",
        "-m",
        "slow",
    )
    assert "[smollm2-135m-fp32-cpu-bs1-prefill512-fullppl]" in slow.stdout
    hub = run_pytest("bench/test_language_model.py", "--collect-only", "-q", "--models", "gpt2", "-m", "hub")
    assert "[gpt2-fp32-cpu-bs1-prefill512]" in hub.stdout
    skipped = run_pytest(
        "bench/test_language_model.py",
        "-q",
        "-rs",
        "--models",
        "smollm2-135m",
        "--techniques",
        "onnx-int8",
        "-k",
        "prefill512 and not fullppl",
    )
    assert "onnx-int8 does not apply to causal-lm models" in skipped.stdout, skipped.stdout[-2000:]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--models", "minilm-sst2,gpt7"], "unknown model 'gpt7'; valid models: minilm-sst2"),
        (["--techniques", "int3"], "unknown technique 'int3'"),
        (["--techniques", "onnx-fp32+dynamic-int8"], "'dynamic-int8' needs a float PyTorch model"),
    ],
)
def test_bad_names_are_usage_errors_listing_choices(args, message):
    out = run_pytest("bench", "--collect-only", "-q", *args)
    assert out.returncode == 4
    assert message in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_missing_data_dir_stops_the_run_with_one_message(tmp_path):
    out = run_pytest(
        "bench",
        "-k",
        "minilm-sst2-fp32-cpu-bs1",
        "--data-dir",
        str(tmp_path / "nowhere"),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert out.returncode == 4, out.stdout[-2000:]
    text = out.stdout + out.stderr
    assert "nowhere" in text and "does not exist" in text and "--data-dir" in text and "Traceback" not in text


@pytest.mark.slow
def test_absent_gpu_tier_is_skipped_with_reason():
    out = run_pytest("bench", "-m", "t4", "--models", "minilm-sst2", "--techniques", "fp32", "-rs", "-q")
    assert out.returncode == 0
    from compressors.machine.hardware import detect

    if "t4" not in detect().tiers:  # the reason names what was looked for and what torch said
        assert (
            "SKIPPED [2] bench/test_classification.py: t4: no NVIDIA GPU with compute capability >= 7.5 found ("
            in out.stdout
            and "torch.cuda.is_available()=" in out.stdout
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "gpu"], "--device 'gpu' is not a device; valid: cpu, cuda, cuda:N (on this machine: cpu"),
        (["--device", "cuda:99"], "--device 'cuda:99': no CUDA device"),
        # argparse's wording; it quotes the choices before Python 3.12 and not after
        (["--on-fallback", "ignore"], "argument --on-fallback: invalid choice: 'ignore' (choose from "),
    ],
)
def test_bad_device_options_are_usage_errors_listing_choices(args, message):
    out = run_pytest("bench", "--collect-only", "-q", *args)
    assert out.returncode == 4 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    if args[0] == "--on-fallback":
        assert all(choice in out.stderr.split("choose from ")[1] for choice in ("fail", "xfail", "warn"))


# A plugin that makes compressors.machine.hardware.detect() report simulated GPUs (before bench/ imports it),
# and prints each collected configuration with its tier markers and skip reasons.
SIMULATED_GPU_PLUGIN = """
import os, types
from compressors.machine import hardware

CARDS = {"t4": [("Tesla T4", (7, 5), 15843721216)],
         "legacy": [("NVIDIA GeForce GTX 1050 Ti", (6, 1), 4236312576)],
         "both": [("NVIDIA GeForce GTX 1050 Ti", (6, 1), 4236312576), ("Tesla T4", (7, 5), 15843721216)],
         }[os.environ["SIMULATED_GPUS"]]

class FakeCuda:
    def is_available(self): return True
    def device_count(self): return len(CARDS)
    def get_device_properties(self, i): return types.SimpleNamespace(name=CARDS[i][0], total_memory=CARDS[i][2])
    def get_device_capability(self, i): return CARDS[i][1]

SIMULATED = hardware.probe_hardware(FakeCuda(), "12.8", None)
hardware.detect = lambda: SIMULATED

def pytest_collection_finish(session):
    for item in session.items:
        tiers = [m.name for m in item.iter_markers() if m.name in hardware.TIERS]
        skips = [m.kwargs.get("reason", "") for m in item.iter_markers("skip")]
        print("CASE", item.callspec.id, ",".join(tiers), "|", " / ".join(skips) or "RUN")
"""


def collect_simulated(tmp_path, gpus, *args) -> dict[str, tuple[str, str]]:
    (tmp_path / "simulated_gpu.py").write_text(SIMULATED_GPU_PLUGIN)
    out = run_pytest(
        "bench",
        "--collect-only",
        "-q",
        "-p",
        "simulated_gpu",
        *args,
        env_extra={"PYTHONPATH": str(tmp_path), "SIMULATED_GPUS": gpus},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    cases = {}
    for line in out.stdout.splitlines():
        if line.startswith("CASE "):
            head, _, skip = line.partition(" | ")
            _, case_id, tiers = head.split(" ")
            cases[case_id] = (tiers, skip)
    return cases


@pytest.mark.slow
def test_t4_machine_runs_every_gpu_capable_technique(tmp_path):
    from compressors.builders.techniques import default_techniques
    from compressors.core.task_kinds import TASK_CLASSIFICATION

    CLASSIFICATION_TECHNIQUES = default_techniques(TASK_CLASSIFICATION)
    from compressors.builders.techniques import parse_chain

    cases = collect_simulated(tmp_path, "t4", "-m", "t4", "--models", "minilm-sst2")
    assert all(tiers == "t4" and "-t4-bs" in case_id for case_id, (tiers, _) in cases.items())
    running = {case_id for case_id, (_, skip) in cases.items() if skip == "RUN"}
    gpu_capable = [name for name in CLASSIFICATION_TECHNIQUES if "cuda" in parse_chain(name).devices]
    compiling = [name for name in gpu_capable if any(s.compiles for s in parse_chain(name).build_stages)]
    assert set(compiling) == {"torchao-int8-wo-compiled", "torchao-int8-dyn-compiled"}
    everyday = [name for name in gpu_capable if name not in compiling]
    assert running == {f"minilm-sst2-{name}-t4-bs{bs}" for name in everyday for bs in (1, 32)}
    assert cases["minilm-sst2-torchao-int8-dyn-compiled-t4-bs1"][1].startswith("extended: ")
    assert {"fp16", "bnb-nf4", "onnx-fp32", "qlora"} <= set(gpu_capable)
    assert cases["minilm-sst2-onnx-int8-t4-bs1"][1] == "onnx-int8 runs on ['cpu'], not on cuda (t4)"


@pytest.mark.slow
def test_tier_absent_from_a_gpu_machine_is_skipped_naming_what_was_found(tmp_path):
    cases = collect_simulated(tmp_path, "t4", "-m", "legacy_gpu", "--models", "minilm-sst2", "--techniques", "fp32")
    assert set(cases) == {"minilm-sst2-fp32-legacy_gpu-bs1", "minilm-sst2-fp32-legacy_gpu-bs32"}
    for tiers, skip in cases.values():
        assert tiers == "legacy_gpu"
        assert skip == (
            "legacy_gpu: no NVIDIA GPU with compute capability < 7.5 found (cuda:0 Tesla T4 "
            "(compute capability 7.5, t4); torch.cuda.is_available()=True, torch built with CUDA 12.8)"
        )


@pytest.mark.slow
def test_device_option_restricts_tiers(tmp_path):
    cases = collect_simulated(
        tmp_path, "both", "--models", "minilm-sst2", "--techniques", "fp32", "-k", "bs1", "--device", "cuda:0"
    )
    assert cases == {
        "minilm-sst2-fp32-cpu-bs1": ("cpu", "cpu: --device cuda:0 restricts the run to CUDA"),
        "minilm-sst2-fp32-t4-bs1": (
            "t4",
            "t4: --device cuda:0 selects cuda:0 NVIDIA GeForce GTX 1050 Ti (compute capability 6.1, legacy_gpu)",
        ),
        "minilm-sst2-fp32-legacy_gpu-bs1": ("legacy_gpu", "RUN"),
    }
    on_cpu = collect_simulated(
        tmp_path, "both", "--models", "minilm-sst2", "--techniques", "fp32", "-k", "bs1", "--device", "cpu"
    )
    assert {case_id: skip for case_id, (_, skip) in on_cpu.items()} == {
        "minilm-sst2-fp32-cpu-bs1": "RUN",
        "minilm-sst2-fp32-t4-bs1": "t4: --device cpu restricts the run to the CPU",
        "minilm-sst2-fp32-legacy_gpu-bs1": "legacy_gpu: --device cpu restricts the run to the CPU",
    }


@pytest.mark.slow
def test_saved_runs_are_numbered_never_overwritten(tmp_path):
    # pytest-benchmark numbers every save; a second save with the same name adds a file.
    (tmp_path / "test_x.py").write_text("def test_x(benchmark):\n    benchmark(sum, [1, 2])\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    for _ in range(2):
        out = run_pytest(
            "test_x.py", "--benchmark-save=run1", "--benchmark-storage", str(tmp_path / ".b"), cwd=tmp_path
        )
        assert out.returncode == 0, out.stdout
    saved = sorted(p.name for p in (tmp_path / ".b").rglob("*.json"))
    assert [name[:4] for name in saved] == ["0001", "0002"] and all(name.endswith("_run1.json") for name in saved)


def test_compressbench_errors_are_reported_without_traceback(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the suite's plugins from this checkout, not an installed copy
    pytester.makepyfile(
        test_raises="""
        from compressors.quality.data import DataError

        def test_it():
            raise DataError("dev.tsv is missing; use --data-dir")
    """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *SUITE_PLUGINS)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*DataError: dev.tsv is missing; use --data-dir*"])
    assert "raise DataError" not in result.stdout.str()


@pytest.mark.slow
def test_machine_info_records_hardware_options_and_versions(pytester, monkeypatch, tmp_path):
    import json

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # timing on in the child
    pytester.makepyfile(test_bench="def test_x(benchmark):\n    benchmark(sum, [1, 2])\n")
    saved = tmp_path / "run.json"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", *SUITE_PLUGINS, f"--benchmark-json={saved}", "--device", "cpu",
        "--on-fallback", "warn")
    result.assert_outcomes(passed=1)
    assert saved.is_file(), result.stdout.str()[-3000:] + result.stderr.str()[-3000:]
    info = json.loads(saved.read_text())["machine_info"]["compressbench"]
    from compressors.machine.hardware import detect

    assert info["hardware"] == json.loads(json.dumps(detect().to_dict()))
    assert set(info["hardware"]["cpu"]["isa"]) == {"avx2", "avx512", "vnni", "avx512_bf16", "amx"}
    assert {"torch", "transformers", "bitsandbytes", "onnxruntime", "peft"} <= set(info["versions"])
    assert info["versions"]["torch"] != "absent" and info["device_option"] == "cpu" and info["on_fallback"] == "warn"
    assert info["torch_build"]["cuda"] == info["hardware"]["cuda"]["torch_cuda"]
    assert "CPUExecutionProvider" in info["onnxruntime_providers"]
    assert info["malloc"]["mode"] in ("steady", "user") and "why" in info["malloc"]


def test_xdist_workers_share_the_cores_instead_of_each_taking_all(monkeypatch):
    import dataclasses
    import os

    import torch

    from bench.plugin.process import split_threads_among_workers
    from compressors.machine import hardware

    real = hardware.detect()
    cpu = dataclasses.replace(real.cpu, physical_cores=4, usable_threads=8, threads=8)
    four_cores = dataclasses.replace(real, cpu=cpu)
    monkeypatch.setattr(hardware, "detect", lambda: four_cores)
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert split_threads_among_workers(2) == 2
        assert torch.get_num_threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2"
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert split_threads_among_workers(8) == 1  # more workers than cores: one thread each
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice stands
        assert split_threads_among_workers(2) is None and os.environ["OMP_NUM_THREADS"] == "3"
    finally:
        torch.set_num_threads(before)
