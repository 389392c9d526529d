"""GPU memory of one configuration: VRAM right after load and peak VRAM during evaluation.

Two views, both recorded where available:

* PyTorch's caching allocator (``torch.cuda.memory_allocated`` / ``max_memory_allocated``):
  bytes of live tensors on the device, exact and free of the CUDA context. Says nothing
  about ONNX Runtime's or bitsandbytes' own allocations outside PyTorch.
* NVML per-process usage (``nvmlDeviceGetComputeRunningProcesses``, ``nvidia-ml-py``): what
  the driver charges this process on that GPU, CUDA context and every allocator included.
  NVML keeps no per-process peak, so a background thread samples it during evaluation.

Numbers are comparable across configurations only with one model on the GPU at a time:
:class:`VramMeter` runs in a process that holds one model (the isolated measurement
process), frees the allocator's cache and restarts its peak before loading, and reports
every figure as a difference from the moment before loading. A difference below zero is
memory freed during the measurement (the seeds' "negative VRAM deltas" of a model that had
silently gone to the CPU): it is never reported as memory use, but clamped to 0 and named
in ``memory_flags``.
"""

from __future__ import annotations

import gc
import os
import threading
from typing import Any

NVML_SAMPLE_INTERVAL_S = 0.005


def nonnegative_delta(label: str, after: int, before: int, flags: list[str]) -> int:
    """``after - before``, clamped at 0; a negative difference is appended to ``flags``."""
    delta = int(after) - int(before)
    if delta < 0:
        flags.append(f"{label}: negative delta {delta} bytes (after {after} < before {before}); reported as 0")
        return 0
    return delta


def release_cuda_memory(device: str, cuda: Any) -> int:
    """Free what the caching allocator holds on ``device`` and restart its peak; returns the
    bytes still allocated (tensors someone still references: 0 when nothing leaked)."""
    gc.collect()
    cuda.synchronize(device)
    cuda.empty_cache()
    cuda.reset_peak_memory_stats(device)
    return int(cuda.memory_allocated(device))


def nvml_uuid(torch_uuid: Any) -> str:
    """NVML spells a GPU's UUID ``GPU-<hex with dashes>``; torch's ``props.uuid`` prints without the prefix."""
    text = str(torch_uuid)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


class NvmlProcessMemory:
    """Bytes NVML charges process ``pid`` on CUDA device ``index``.

    The NVML handle is found by the device's UUID, else its PCI bus id, so CUDA's
    numbering (``CUDA_VISIBLE_DEVICES``, fastest-first order) cannot point at another GPU;
    ``match`` says which one worked. ``unavailable`` says why nothing can be read (no
    ``nvidia-ml-py``, no driver, the process not listed because the container has its own
    PID namespace, or the driver not reporting per-process usage).
    """

    def __init__(self, nvml: Any, cuda: Any, index: int, pid: int | None = None):
        self.nvml, self.pid, self.handle, self.match, self.unavailable = nvml, pid or os.getpid(), None, None, None
        if nvml is None:
            self.unavailable = "nvidia-ml-py not installed"
            return
        try:
            nvml.nvmlInit()
        except Exception as exc:  # noqa: BLE001  (NVMLError subclasses: reported in the results, not fatal)
            self.unavailable, self.nvml = f"NVML init failed: {exc}", None
            return
        if cuda is None:  # an ONNX Runtime process has no torch to ask for the UUID
            lookups = [("index (CUDA_DEVICE_ORDER=PCI_BUS_ID assumed)", lambda: nvml.nvmlDeviceGetHandleByIndex(index))]
        else:
            props = cuda.get_device_properties(index)
            lookups = [("uuid", lambda: nvml.nvmlDeviceGetHandleByUUID(nvml_uuid(props.uuid))),
                       ("pci_bus_id", lambda: nvml.nvmlDeviceGetHandleByPciBusId(
                           f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"))]
        failures = []
        for match, lookup in lookups:
            try:
                self.handle, self.match = lookup(), match
                break
            except Exception as exc:  # noqa: BLE001  (kept, then the next way of naming the device is tried)
                failures.append(f"{match}: {type(exc).__name__}: {exc}")
        if self.handle is None:
            self.unavailable = f"no NVML device matches CUDA device {index} ({'; '.join(failures)})"

    def used_bytes(self) -> int | None:
        """This process's usage now; None (and ``unavailable`` set) when NVML cannot say."""
        if self.handle is None:
            return None
        try:
            processes = self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle)
        except Exception as exc:  # noqa: BLE001  (an NVMLError: per-process figures missing, said in the results)
            self.unavailable = f"NVML process query failed: {type(exc).__name__}: {exc}"
            return None
        for process in processes:
            if process.pid == self.pid:
                if process.usedGpuMemory is None:  # NVML_VALUE_NOT_AVAILABLE (e.g. Windows WDDM)
                    self.unavailable = "the driver does not report per-process memory"
                    return None
                return int(process.usedGpuMemory)
        self.unavailable = f"process {self.pid} not among NVML's compute processes (own PID namespace?)"
        return None

    def close(self) -> None:
        if self.nvml is not None:
            self.nvml.nvmlShutdown()
            self.nvml = None


class _PeakSampler:
    """Samples ``read()`` in a background thread until stopped; keeps the maximum."""

    def __init__(self, read, interval_s: float = NVML_SAMPLE_INTERVAL_S):
        self.read, self.interval_s, self.peak = read, interval_s, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while True:
            value = self.read()
            if value is not None:
                self.peak = value if self.peak is None else max(self.peak, value)
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        value = self.read()  # one last sample after the work
        if value is not None:
            self.peak = value if self.peak is None else max(self.peak, value)


class VramMeter:
    """VRAM of loading and evaluating one model on ``device``. Use::

        meter = VramMeter("cuda:0", torch.cuda, import_nvml())
        meter.before_load(); model = load(...); meter.after_load()
        with meter.evaluating(): evaluate(model)
        results.update(meter.results())

    With ``cuda`` (``torch.cuda``) the results (bytes, never negative) come from PyTorch's
    allocator: ``vram_after_load_bytes`` (allocated after load), ``vram_load_peak_bytes``
    (peak while loading: quantizing on the GPU can pass through float weights) and
    ``vram_peak_bytes`` (peak during evaluation, resident weights included). With NVML,
    ``vram_process_*`` add the process's own usage beyond what it had before loading (CUDA
    context excluded; ``vram_process_context_bytes`` is that context). Without ``cuda`` (an
    ONNX Runtime process, which must not import torch) the ``vram_*`` figures are NVML's.
    ``vram_method`` says which.
    """

    def __init__(self, device: str, cuda: Any = None, nvml: Any = None, pid: int | None = None):
        _, _, index = device.partition(":")
        self.cuda = cuda
        self.index = int(index) if index else (int(cuda.current_device()) if cuda is not None else 0)
        self.device = f"cuda:{self.index}"
        self.nvml = NvmlProcessMemory(nvml, cuda, self.index, pid)
        self.flags: list[str] = []
        self.raw: dict[str, int | None] = {}

    def _sync(self) -> None:
        if self.cuda is not None:
            self.cuda.synchronize(self.device)

    def before_load(self) -> None:
        if self.cuda is not None:
            self.cuda.init()
            self.raw["allocated_before"] = release_cuda_memory(self.device, self.cuda)  # also creates the context
        self.raw["process_before"] = self.nvml.used_bytes()

    def after_load(self) -> None:
        self._sync()
        if self.cuda is not None:
            self.raw["allocated_after_load"] = int(self.cuda.memory_allocated(self.device))
            self.raw["load_peak"] = int(self.cuda.max_memory_allocated(self.device))
            self.cuda.reset_peak_memory_stats(self.device)  # the evaluation's own peak from here
        self.raw["process_after_load"] = self.nvml.used_bytes()

    def evaluating(self):
        return _EvaluationWindow(self)

    def results(self) -> dict:
        raw, flags = self.raw, self.flags
        out: dict[str, Any] = {"vram_device": self.device}
        if self.cuda is not None:
            before = raw["allocated_before"]
            out.update(
                {
                    "vram_method": "torch-allocator",
                    "vram_after_load_bytes": nonnegative_delta(
                        "vram_after_load", raw["allocated_after_load"], before, flags
                    ),
                    "vram_load_peak_bytes": nonnegative_delta("vram_load_peak", raw["load_peak"], before, flags),
                    "vram_peak_bytes": nonnegative_delta("vram_peak", raw["eval_peak"], before, flags),
                    "vram_allocated_before_load_bytes": before,  # > 0: something else held tensors on the GPU
                }
            )
        process_before = raw.get("process_before")
        if process_before is not None and raw.get("process_after_load") is not None:
            process = {
                "vram_process_context_bytes": process_before,
                "vram_process_after_load_bytes": nonnegative_delta(
                    "vram_process_after_load", raw["process_after_load"], process_before, flags
                ),
            }
            if raw.get("process_peak") is not None:
                process["vram_process_peak_bytes"] = nonnegative_delta(
                    "vram_process_peak", raw["process_peak"], process_before, flags
                )
            out.update(process)
            if self.cuda is None:
                out["vram_method"] = "nvml-process"
                out["vram_after_load_bytes"] = process["vram_process_after_load_bytes"]
                if "vram_process_peak_bytes" in process:
                    out["vram_peak_bytes"] = process["vram_process_peak_bytes"]
        else:
            out["vram_process_unavailable"] = self.nvml.unavailable or "no NVML reading"
            if self.cuda is None:
                out["vram_method"] = "none (no NVML reading and no PyTorch allocator in this runtime)"
        out["nvml_device_match"] = self.nvml.match
        out["memory_flags"] = list(flags)
        self.nvml.close()
        return out


class _EvaluationWindow:
    def __init__(self, meter: VramMeter):
        self.meter = meter
        self.sampler = _PeakSampler(meter.nvml.used_bytes) if meter.nvml.handle is not None else None

    def __enter__(self):
        if self.sampler:
            self.sampler.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.meter._sync()
        if self.sampler:
            self.sampler.__exit__(*exc)
            self.meter.raw["process_peak"] = self.sampler.peak
        if self.meter.cuda is not None:
            self.meter.raw["eval_peak"] = int(self.meter.cuda.max_memory_allocated(self.meter.device))
