"""The kernel probe: how fast this machine runs the kernels the techniques depend on.

Each kernel multiplies the same matrices, shaped like a MiniLM feed-forward layer at batch 32
(:data:`PROBE_SHAPE`: M x K activations times a K x N weight), with the run's thread count, and
reports achieved throughput in G(FL)OP/s (2*M*K*N per call). The probe runs once per machine
fingerprint (CPU, ISA flags, threads, library versions), takes seconds, and is cached as JSON in the
artifact cache; a probe taken while other processes competed for the CPU is not cached.

What it is for: :func:`slow_kernel_reason` says when a kernel is a reference fallback on this
machine (``torch._int_mm`` without VNNI/AMX, bf16 without native support), so its configurations
are skipped at collection with the figures, instead of running for many minutes to measure a
fallback; and the report's *share of peak* (a configuration's useful operations per second over
the probed throughput of its kernel). The rule and its figures: docs/decisions/kernel-probe.md.

``python -m compressors.machine.hardware --kernels`` prints the probe.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from compressors.core.cache import library_versions
from compressors.core.scratch import scratch_dir

PROBE_SHAPE = (768, 384, 1536)  # M (32 sentences x 24 tokens), K (MiniLM hidden), N (its FFN width)
PROBE_VERSION = 2  # bump when a kernel's measurement changes (invalidates cached probes)
PROBE_SECONDS = 0.3  # time spent timing each kernel (after a sixth of it warming up); median call
BASELINE_KERNEL = "fp32-gemm"
# A kernel slower than the fp32 GEMM by more than this factor at the same shape and threads is a
# reference fallback, not a fast path: its configurations are skipped unless --run-slow-kernels.
SLOW_KERNEL_FACTOR = 2.0
PROBE_LIBS = ("torch", "onnxruntime", "onnx", "bitsandbytes", "openvino", "nncf")


class KernelUnavailable(Exception):
    """A kernel cannot run here (package missing, unsupported CPU); the probe records why."""


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A kernel the probe measures.

    Args:
        name: the name techniques declare in ``Technique.kernels``.
        description: what runs (library, operator).
        setup: ``setup(shape, threads) -> call``: builds inputs once, returns the call to time.
        missing_isa_hint: what a slow result usually means (named in skip reasons).
    """

    name: str
    description: str
    setup: Callable[[tuple[int, int, int], int], Callable[[], object]]
    missing_isa_hint: str = ""


def _torch_matmul(dtype_name: str):
    def setup(shape, threads):
        import torch

        torch.set_num_threads(threads)
        m, k, n = shape
        dtype = getattr(torch, dtype_name)
        a, w = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
        return lambda: torch.mm(a, w)

    return setup


def _int_mm(shape, threads):
    import torch

    torch.set_num_threads(threads)
    m, k, n = shape
    a = torch.randint(-128, 127, (m, k), dtype=torch.int8)
    w = torch.randint(-128, 127, (k, n), dtype=torch.int8)
    return lambda: torch._int_mm(a, w)


def _fbgemm_dynamic(shape, threads):
    import warnings

    import torch

    torch.set_num_threads(threads)
    m, k, n = shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(k, n)),
                                                       {torch.nn.Linear}, dtype=torch.qint8)
    x = torch.randn(m, k)
    return lambda: model(x)


def _bnb(bits: int):
    def setup(shape, threads):
        import logging

        import torch

        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise KernelUnavailable("bitsandbytes not installed") from exc
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
        torch.set_num_threads(threads)
        m, k, n = shape
        dense = torch.nn.Linear(k, n)
        if bits == 8:
            layer = bnb.nn.Linear8bitLt(k, n, has_fp16_weights=False, threshold=6.0)
            layer.weight = bnb.nn.Int8Params(dense.weight.data, requires_grad=False, has_fp16_weights=False)
        else:
            layer = bnb.nn.Linear4bit(k, n, compute_dtype=torch.float32, quant_type="nf4")
            layer.weight = bnb.nn.Params4bit(dense.weight.data, requires_grad=False, quant_type="nf4")
        layer.bias = dense.bias
        layer = layer.to("cpu")  # quantizes the weights
        x = torch.randn(m, k)

        def call():
            with torch.inference_mode():
                return layer(x)

        return call

    return setup


def _ort(quantization: str):
    def setup(shape, threads):

        import numpy as np

        try:
            import onnx
            import onnxruntime as ort
            from onnx import TensorProto, helper, numpy_helper
        except ImportError as exc:
            raise KernelUnavailable("onnx / onnxruntime not installed") from exc
        m, k, n = shape
        rng = np.random.default_rng(0)
        weight = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "W")
        graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "probe",
                                  [helper.make_tensor_value_info("X", TensorProto.FLOAT, [m, k])],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])], [weight])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        x = rng.standard_normal((m, k)).astype(np.float32)
        with scratch_dir("kernel") as tmp:
            source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            onnx.save(model, str(source))
            from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_dynamic, quantize_static

            if quantization == "dynamic":
                quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
            else:
                class Reader(CalibrationDataReader):
                    def __init__(self):
                        self.batches = iter([{"X": x}])

                    def get_next(self):
                        return next(self.batches, None)

                quantize_static(str(source), str(target), Reader(), activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8)
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
        return lambda: session.run(None, {"X": x})

    return setup


def _openvino_matmul(quantize: bool):
    def setup(shape, threads):
        try:
            import openvino as ov
            import openvino.opset13 as ops
        except ImportError as exc:
            raise KernelUnavailable("openvino not installed") from exc
        m, k, n = shape
        import numpy as np

        rng = np.random.default_rng(0)
        x = ops.parameter([m, k], np.float32, name="x")
        model = ov.Model([ops.matmul(x, ops.constant(rng.standard_normal((k, n)).astype(np.float32)), False, False)],
                         [x])
        data = rng.standard_normal((m, k)).astype(np.float32)
        if quantize:
            import nncf

            model = nncf.quantize(model, nncf.Dataset([data]), subset_size=1)
        compiled = ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                          "INFERENCE_NUM_THREADS": threads,
                                                          "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        return lambda: request.infer([data])

    return setup


KERNELS: dict[str, Kernel] = {k.name: k for k in (
    Kernel("fp32-gemm", "torch.mm, float32 (the baseline every kernel is compared with)", _torch_matmul("float32")),
    Kernel("bf16-gemm", "torch.mm, bfloat16", _torch_matmul("bfloat16"),
           "no native bfloat16 (AVX512-BF16 or AMX): PyTorch converts and computes in float32"),
    Kernel("int8-int-mm", "torch._int_mm, int8 x int8 -> int32 (torchao's dynamic int8)", _int_mm,
           "no AVX512-VNNI/AMX: torch._int_mm falls back to a reference kernel"),
    Kernel("fbgemm-dynamic-int8", "PyTorch dynamic-quantized Linear (fbgemm, activations quantized per call)",
           _fbgemm_dynamic),
    Kernel("ort-dynamic-int8", "ONNX Runtime DynamicQuantizeMatMul (quantize_dynamic, int8 weights)", _ort("dynamic"),
           "no VNNI/AMX: u8s8 through vpmaddubsw"),
    Kernel("ort-qdq-int8", "ONNX Runtime QDQ int8 MatMul (quantize_static, uint8 activations)", _ort("static"),
           "no VNNI/AMX: u8s8 through vpmaddubsw"),
    Kernel("bnb-int8", "bitsandbytes Linear8bitLt (LLM.int8, threshold 6.0) on the CPU", _bnb(8),
           "no AVX-512: bitsandbytes' CPU int8 path dequantizes into a float matmul"),
    Kernel("bnb-4bit", "bitsandbytes Linear4bit (NF4) on the CPU", _bnb(4),
           "no AVX512-BF16: bitsandbytes dequantizes 4-bit weights into a float matmul"),
    Kernel("openvino-fp32", "OpenVINO CPU plugin MatMul, float32 inference precision", _openvino_matmul(False)),
    Kernel("openvino-int8", "OpenVINO CPU plugin MatMul quantized by nncf.quantize (int8)", _openvino_matmul(True),
           "no VNNI/AMX: OpenVINO's int8 kernels lose their advantage"),
)}


def register_kernel(kernel: Kernel) -> Kernel:
    """Add a kernel (a runtime added later: OpenVINO, ...). Names are unique."""
    if kernel.name in KERNELS:
        raise ValueError(f"kernel {kernel.name!r} is registered twice")
    KERNELS[kernel.name] = kernel
    return kernel


def measure(kernel: Kernel, threads: int, shape=PROBE_SHAPE, seconds: float = PROBE_SECONDS) -> dict:
    """One kernel's achieved throughput: ``{"gops": ..., "call_s": ..., "calls": ...}`` or ``{"error": ...}``."""
    m, k, n = shape
    try:
        call = kernel.setup(shape, threads)
        warm_until = time.perf_counter() + seconds / 6
        call()
        while time.perf_counter() < warm_until:  # caches, allocator, frequency: a few calls before timing
            call()
        times, start = [], time.perf_counter()
        while True:
            before = time.perf_counter()
            call()
            times.append(time.perf_counter() - before)
            if time.perf_counter() - start >= seconds and len(times) >= 5:
                break
    except KernelUnavailable as exc:
        return {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001  (a kernel that fails here is reported, not fatal to the run)
        return {"error": f"{type(exc).__name__}: {exc}"}
    per_call, calls = statistics.median(times), len(times)  # the median call: a brief interruption does not move it
    return {"gops": round(2 * m * k * n / per_call / 1e9, 2), "call_s": round(per_call, 6), "calls": calls}


def fingerprint(cpu, threads: int) -> str:
    """What makes a probe valid for a run: the CPU, its flags, the thread count and library versions."""
    key = {"cpu": cpu.name, "flags": list(cpu.flags), "threads": threads, "probe": PROBE_VERSION,
           "shape": list(PROBE_SHAPE), "versions": library_versions(*PROBE_LIBS), "kernels": sorted(KERNELS)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def run_probe(cpu, threads: int) -> dict:
    """Measure every registered kernel (seconds) and say whether anything competed meanwhile."""
    from compressors.core.quiet import quiet_libraries
    from compressors.machine.timing import ContentionMonitor

    with ContentionMonitor(threads) as monitor, quiet_libraries():  # nncf.quantize's progress bar, ...
        results = {name: measure(kernel, threads) for name, kernel in KERNELS.items()}
    return {
        "fingerprint": fingerprint(cpu, threads), "cpu": cpu.name, "isa": cpu.isa, "threads": threads,
        "shape_mkn": list(PROBE_SHAPE), "unit": "G(FL)OP/s, 2*M*K*N per call", "kernels": results,
        "contention": monitor.result, "probed_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def cached_probe(cache_root: Path, cpu, threads: int, refresh: bool = False) -> dict:
    """The probe for this machine and thread count: from ``cache_root/kernel-probe/`` or measured now
    (and cached unless other processes competed while it ran)."""
    path = Path(cache_root) / "kernel-probe" / f"{fingerprint(cpu, threads)}.json"
    if path.is_file() and not refresh:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            pass  # unreadable: measure again and overwrite it
    probe = run_probe(cpu, threads)
    if not probe["contention"]["contended"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(probe, indent=2))
        partial.replace(path)
    return probe


def slow_kernel_reason(probe: dict, kernel: str) -> str | None:
    """Why ``kernel`` is a reference fallback here (slower than the fp32 GEMM by more than
    :data:`SLOW_KERNEL_FACTOR`), or None when it is not, or when the probe could not tell."""
    kernels = probe.get("kernels", {})
    base, this = kernels.get(BASELINE_KERNEL, {}), kernels.get(kernel, {})
    if "gops" not in base or "gops" not in this:
        return None
    if this["gops"] * SLOW_KERNEL_FACTOR >= base["gops"]:
        return None
    hint = KERNELS[kernel].missing_isa_hint if kernel in KERNELS else ""
    return (f"{kernel} reaches {this['gops']:g} G(FL)OP/s here vs {BASELINE_KERNEL} {base['gops']:g} "
            f"({probe['threads']} threads, {probe['cpu']}{'; ' + hint if hint else ''})")


def share_of_peak(useful_ops: float | None, median_s: float | None, probe: dict | None, kernel: str | None):
    """Useful operations per second of a timed call over the probed throughput of its kernel."""
    if not (useful_ops and median_s and probe and kernel):
        return None
    gops = probe.get("kernels", {}).get(kernel, {}).get("gops")
    return None if not gops else round(useful_ops / median_s / (gops * 1e9), 4)
