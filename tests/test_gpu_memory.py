"""compressors/machine/gpu_memory.py: VRAM accounting against a simulated CUDA allocator and a fake NVML."""

from __future__ import annotations

import threading
import time
import types

import pytest

from compressors.machine.gpu_memory import (
    NvmlProcessMemory,
    VramMeter,
    nonnegative_delta,
    nvml_uuid,
    release_cuda_memory,
)

MB = 2**20
PID = 4242


class FakeAllocator:
    """The torch.cuda calls VramMeter makes, over a simulated caching allocator on one device."""

    def __init__(self, allocated=0, leaked=0):
        self.allocated, self.peak, self.cached, self.leaked = allocated, allocated, 0, leaked
        self.calls = []
        self.lock = threading.Lock()

    def alloc(self, nbytes):
        with self.lock:
            self.allocated += nbytes
            self.peak = max(self.peak, self.allocated)

    def free(self, nbytes):
        with self.lock:
            self.allocated -= nbytes
            self.cached += nbytes

    # torch.cuda API
    def init(self):
        self.calls.append("init")

    def current_device(self):
        return 0

    def synchronize(self, device=None):
        self.calls.append(f"synchronize {device}")

    def empty_cache(self):
        self.calls.append("empty_cache")
        self.cached = 0

    def reset_peak_memory_stats(self, device=None):
        self.calls.append(f"reset_peak {device}")
        self.peak = self.allocated

    def memory_allocated(self, device=None):
        return self.allocated

    def max_memory_allocated(self, device=None):
        return self.peak

    def get_device_properties(self, index):
        return types.SimpleNamespace(uuid="5a1e2b3c-0000-1111-2222-333344445555", pci_domain_id=0, pci_bus_id=0x3b,
                                     pci_device_id=0)


class FakeNvml:
    """pynvml's calls for per-process usage; ``usage`` is what the driver charges process PID."""

    def __init__(self, usage=300 * MB, listed=True, per_process=True, by_uuid=True):
        self.usage, self.listed, self.per_process, self.by_uuid = usage, listed, per_process, by_uuid
        self.handles, self.inits, self.shutdowns = [], 0, 0

    def nvmlInit(self):
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if not self.by_uuid:
            raise RuntimeError("NVMLError_NotFound")
        self.handles.append(("uuid", uuid))
        return "handle"

    def nvmlDeviceGetHandleByPciBusId(self, bus_id):
        self.handles.append(("pci", bus_id))
        return "handle"

    def nvmlDeviceGetHandleByIndex(self, index):
        self.handles.append(("index", index))
        return "handle"

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        assert handle == "handle"
        others = [types.SimpleNamespace(pid=1, usedGpuMemory=2000 * MB)]
        mine = [types.SimpleNamespace(pid=PID, usedGpuMemory=self.usage if self.per_process else None)]
        return others + (mine if self.listed else [])


def wait_until_sampled(window, value, timeout_s=10.0):
    """Block until the background sampler has seen ``value`` (scheduling on a loaded machine varies)."""
    deadline = time.monotonic() + timeout_s
    while window.sampler.peak != value:
        assert time.monotonic() < deadline, f"sampler never saw {value}; peak {window.sampler.peak}"
        time.sleep(0.001)


def test_nonnegative_delta_clamps_and_flags():
    flags = []
    assert nonnegative_delta("x", 10, 4, flags) == 6 and flags == []
    assert nonnegative_delta("vram_after_load", 10, 40, flags) == 0
    assert flags == ["vram_after_load: negative delta -30 bytes (after 10 < before 40); reported as 0"]


def test_release_frees_the_cache_and_restarts_the_peak():
    cuda = FakeAllocator(allocated=0)
    cuda.alloc(50 * MB)
    cuda.free(50 * MB)
    assert release_cuda_memory("cuda:0", cuda) == 0
    assert cuda.cached == 0 and cuda.peak == 0
    assert cuda.calls == ["synchronize cuda:0", "empty_cache", "reset_peak cuda:0"]


def test_torch_model_load_and_evaluation_peaks():
    cuda, nvml = FakeAllocator(), FakeNvml(usage=310 * MB)
    meter = VramMeter("cuda:0", cuda, nvml, pid=PID)
    meter.before_load()
    cuda.alloc(120 * MB)  # float weights while quantizing on the GPU
    cuda.free(80 * MB)  # ... leaving 40 MB of packed weights
    nvml.usage = 310 * MB + 64 * MB
    meter.after_load()
    with meter.evaluating() as window:
        cuda.alloc(30 * MB)  # activations
        nvml.usage = 310 * MB + 96 * MB
        wait_until_sampled(window, 310 * MB + 96 * MB)
        cuda.free(30 * MB)
        nvml.usage = 310 * MB + 70 * MB
    results = meter.results()
    assert results["vram_method"] == "torch-allocator" and results["vram_device"] == "cuda:0"
    assert results["vram_after_load_bytes"] == 40 * MB
    assert results["vram_load_peak_bytes"] == 120 * MB
    assert results["vram_peak_bytes"] == 70 * MB  # the evaluation's peak: resident weights + activations
    assert results["vram_process_context_bytes"] == 310 * MB
    assert results["vram_process_after_load_bytes"] == 64 * MB
    assert results["vram_process_peak_bytes"] == 96 * MB  # only the sampler saw it
    assert results["nvml_device_match"] == "uuid"
    assert nvml.handles == [("uuid", "GPU-5a1e2b3c-0000-1111-2222-333344445555")]
    assert results["memory_flags"] == [] and nvml.shutdowns == 1


def test_model_that_left_the_gpu_reports_no_negative_memory():
    # The seeds' symptom: something (a previous model) held VRAM, the new one silently went to the
    # CPU, and memory_allocated fell during "loading": a negative delta is not memory use.
    cuda = FakeAllocator(allocated=0)
    cuda.alloc(200 * MB)  # a previous model still referenced: release cannot free it
    nvml = FakeNvml(usage=500 * MB)
    meter = VramMeter("cuda:0", cuda, nvml, pid=PID)
    meter.before_load()
    cuda.free(200 * MB)  # the previous model is dropped while this one loads on the CPU
    nvml.usage = 450 * MB
    meter.after_load()
    with meter.evaluating():
        pass
    results = meter.results()
    assert results["vram_allocated_before_load_bytes"] == 200 * MB
    assert results["vram_after_load_bytes"] == 0 and results["vram_peak_bytes"] == 0
    assert results["vram_process_after_load_bytes"] == 0
    assert all(v >= 0 for k, v in results.items() if k.endswith("_bytes"))
    flagged = {flag.split(":")[0] for flag in results["memory_flags"]}
    assert flagged == {"vram_after_load", "vram_peak", "vram_process_after_load", "vram_process_peak"}
    assert "negative delta -209715200 bytes" in results["memory_flags"][0]


@pytest.mark.parametrize(
    "nvml, reason",
    [
        (None, "nvidia-ml-py not installed"),
        (FakeNvml(listed=False), f"process {PID} not among NVML's compute processes (own PID namespace?)"),
        (FakeNvml(per_process=False), "the driver does not report per-process memory"),
    ],
)
def test_without_per_process_nvml_the_allocator_figures_stay_and_the_reason_is_given(nvml, reason):
    cuda = FakeAllocator()
    meter = VramMeter("cuda", cuda, nvml, pid=PID)
    meter.before_load()
    cuda.alloc(10 * MB)
    meter.after_load()
    with meter.evaluating():
        pass
    results = meter.results()
    assert results["vram_device"] == "cuda:0" and results["vram_after_load_bytes"] == 10 * MB
    assert results["vram_process_unavailable"] == reason
    assert not any(k.startswith("vram_process_") and k.endswith("_bytes") for k in results)


def test_nvml_device_found_by_pci_bus_id_when_uuid_fails():
    nvml = FakeNvml(by_uuid=False)
    memory = NvmlProcessMemory(nvml, FakeAllocator(), 0, pid=PID)
    assert memory.match == "pci_bus_id" and nvml.handles == [("pci", "00000000:3b:00.0")]
    assert memory.used_bytes() == 300 * MB


def test_nvml_failures_are_reported_not_raised():
    class Broken(FakeNvml):
        def nvmlDeviceGetHandleByPciBusId(self, bus_id):
            raise RuntimeError("NVMLError_NotFound")

    memory = NvmlProcessMemory(Broken(by_uuid=False), FakeAllocator(), 0, pid=PID)
    assert memory.used_bytes() is None
    assert memory.unavailable == (
        "no NVML device matches CUDA device 0 (uuid: RuntimeError: NVMLError_NotFound; "
        "pci_bus_id: RuntimeError: NVMLError_NotFound)"
    )

    class GoneAway(FakeNvml):
        def nvmlDeviceGetComputeRunningProcesses(self, handle):
            raise RuntimeError("NVMLError_GpuIsLost")

    lost = NvmlProcessMemory(GoneAway(), FakeAllocator(), 0, pid=PID)
    assert (
        lost.used_bytes() is None and lost.unavailable == "NVML process query failed: RuntimeError: NVMLError_GpuIsLost"
    )


def test_nvml_uuid_spelling():
    assert nvml_uuid("5a1e-00") == "GPU-5a1e-00" and nvml_uuid("GPU-5a1e-00") == "GPU-5a1e-00"


def test_onnx_runtime_process_measures_with_nvml_only():
    nvml = FakeNvml(usage=280 * MB)
    meter = VramMeter("cuda:1", None, nvml, pid=PID)  # no torch in an ONNX Runtime probe
    meter.before_load()
    nvml.usage = 280 * MB + 90 * MB
    meter.after_load()
    with meter.evaluating() as window:
        nvml.usage = 280 * MB + 130 * MB
        wait_until_sampled(window, 280 * MB + 130 * MB)
        nvml.usage = 280 * MB + 100 * MB
    results = meter.results()
    assert results["vram_method"] == "nvml-process" and results["vram_device"] == "cuda:1"
    assert results["vram_after_load_bytes"] == 90 * MB and results["vram_peak_bytes"] == 130 * MB
    assert nvml.handles == [("index", 1)] and results["nvml_device_match"].startswith("index")


def test_bench_session_keeps_one_model_on_the_gpu(ctx, monkeypatch):
    """bs1 and bs32 of a configuration share one loaded model; the next GPU configuration (or its
    measurement process) first drops it and frees the allocator."""
    from bench import resources
    from bench.cases import cases
    from compressors.core.task_kinds import TASK_CLASSIFICATION
    from compressors.machine.hardware import CpuInfo, probe_hardware

    class OneT4:
        def is_available(self):
            return True

        def device_count(self):
            return 1

        def get_device_properties(self, index):
            return types.SimpleNamespace(name="Tesla T4", total_memory=16 * 2**30)

        def get_device_capability(self, index):
            return (7, 5)

    machine = probe_hardware(OneT4(), "12.8", None, cpu=CpuInfo("cpu", 1, 1, 1, ()))
    monkeypatch.setattr(resources, "detect", lambda: machine)
    released, loads, measured = [], [], []
    monkeypatch.setattr("compressors.machine.gpu_memory.release_cuda_memory",
                        lambda device, cuda: released.append(device) or 0)
    monkeypatch.setattr(
        resources, "load_predictor", lambda artifact, device: loads.append((artifact, device)) or object()
    )
    monkeypatch.setattr(
        resources, "measure_isolated", lambda artifact, eval_set, device, timeout=None: measured.append(device) or {}
    )
    monkeypatch.setattr(resources, "stored_measurement", lambda root, art, ev, dev, cpu, compute, **_: compute())
    loaders = resources.Resources(ctx, types.SimpleNamespace())  # a stand-in config: no run state, no --device
    monkeypatch.setattr(loaders, "artifact", lambda case: case.chain.name)
    monkeypatch.setattr(loaders, "eval_data", lambda case: None)
    fp32_bs1, fp32_bs32, bf16_bs1, _ = cases(TASK_CLASSIFICATION, ["minilm-sst2"], ["fp32", "bf16"], tiers=("t4",))

    first = loaders.predictor(fp32_bs1)
    assert loaders.predictor(fp32_bs32) is first and released == [] and loads == [("fp32", "cuda:0")]
    loaders.predictor(bf16_bs1)
    assert released == ["cuda:0"] and loads == [("fp32", "cuda:0"), ("bf16", "cuda:0")]
    assert [k for k in loaders._memo if k[0] == "predictor"] == [("predictor", "minilm-sst2-bf16-t4", "cuda:0")]
    loaders.measurement(fp32_bs1)  # the measurement process gets the GPU to itself
    assert measured == ["cuda:0"] and released == ["cuda:0", "cuda:0"]
    assert not [k for k in loaders._memo if k[0] == "predictor"]
