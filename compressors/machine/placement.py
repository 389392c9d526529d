"""Where a loaded configuration really lives, and whether a GPU configuration fell back to the CPU.

The seeds ran the same notebooks on a CPU, a T4 and a GTX 1050 Ti; on the older GPU the
quantized models silently ran on the CPU and only the numbers (slower, negative VRAM
deltas) gave it away. Here every loaded predictor describes its placement
(:func:`torch_placement`, :func:`ort_placement`: a JSON-able dict saved in ``extra_info``
on every tier) and :func:`fallback_parts` reads that dict and lists every part of a
configuration meant for a GPU that is not on it:

* PyTorch: every parameter and buffer on the requested CUDA device (``cuda`` accepts any
  CUDA index, ``cuda:N`` only that one);
* bitsandbytes: every ``Linear8bitLt`` / ``Linear4bit`` with its weight and quantization
  state (absmax, ``SCB``) on CUDA, and bitsandbytes' native library a CUDA build (a CPU
  library means its CPU kernels ran);
* ONNX Runtime: the session's providers (``InferenceSession.get_providers()``, the ones the
  session really has, not the ones asked for) led by ``CUDAExecutionProvider``, and, where
  the nodes' assignment was profiled, no compute node on the CPU provider.

Nothing here imports torch or onnxruntime at module level.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

FALLBACK_PREFIX = "fell back to CPU: "
ON_FALLBACK = ("fail", "xfail", "warn")
# How many offending tensor names to list before summarising (a whole model can be on the CPU).
MAX_LISTED = 8
# ONNX Runtime's CUDA provider puts shape arithmetic (Shape, Gather of dims, Concat, ...) on
# the CPU on purpose, and an op type alone cannot tell such a node from a tensor one. These
# are the op types that do a transformer's work: one of them on the CPU provider of a CUDA
# session is a fallback; other CPU nodes are listed in the placement, not failed.
ORT_COMPUTE_OPS = frozenset({
    "MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeLinear", "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat", "QuantizeLinear", "DequantizeLinear", "Attention", "MultiHeadAttention",
    "LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization", "EmbedLayerNormalization",
    "Softmax", "Gelu", "FastGelu", "BiasGelu", "Erf", "Tanh", "Conv", "ConvInteger",
})
BNB_GPU_BACKENDS = ("CUDA", "ROCm")


class FallbackWarning(UserWarning):
    """A configuration meant for a GPU runs (partly) on the CPU, under ``--on-fallback=warn``."""


def device_matches(actual: str, requested: str) -> bool:
    """``actual`` (``"cuda:0"``) is where ``requested`` (``"cuda"``, ``"cuda:0"``, ``"cpu"``) asked for."""
    kind, _, index = requested.partition(":")
    actual_kind, _, actual_index = actual.partition(":")
    return actual_kind == kind and (not index or actual_index == index)


def _summarise(names: list[str]) -> list[str]:
    if len(names) <= MAX_LISTED:
        return names
    return names[:MAX_LISTED] + [f"... and {len(names) - MAX_LISTED} more"]


def _is_bnb_layer(module) -> bool:
    return type(module).__module__.startswith("bitsandbytes") and type(module).__name__ in (
        "Linear8bitLt",
        "Linear4bit",
    )


def bnb_layer_devices(module) -> dict[str, str]:
    """Devices of a bitsandbytes linear's weight and quantization state (absmax / SCB)."""
    devices = {"weight": str(module.weight.device)}
    state = getattr(module.weight, "quant_state", None)  # Linear4bit: Params4bit.quant_state
    if state is not None and getattr(state, "absmax", None) is not None:
        devices["absmax"] = str(state.absmax.device)
    scb = getattr(module.weight, "SCB", None)  # Linear8bitLt: Int8Params.SCB once quantized
    if scb is not None:
        devices["SCB"] = str(scb.device)
    return devices


def bnb_native_library() -> dict:
    """bitsandbytes' backend (``BNB_BACKEND``: CUDA, ROCm, CPU, XPU) and the native library file it loaded."""
    from bitsandbytes import cextension

    library = getattr(cextension, "lib", None)
    return {
        "backend": getattr(cextension, "BNB_BACKEND", "unknown"),
        "native_library": getattr(getattr(library, "_lib", None), "_name", None) or type(library).__name__,
    }


def torch_placement(model, requested: str, bnb_library: dict | None = None) -> dict:
    """Where ``model``'s tensors are, relative to ``requested``.

    Returns ``tensor_devices`` (count of parameters + buffers per device), ``off_device``
    (names of those not on ``requested``, the first :data:`MAX_LISTED`), and for models with
    bitsandbytes layers ``bitsandbytes_layers`` (count, those off the device with where their
    parts are) and ``bitsandbytes_library`` (``bnb_library`` or :func:`bnb_native_library`).
    """
    counts: collections.Counter[str] = collections.Counter()
    off = []
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in named:
            device = str(tensor.device)
            counts[device] += 1
            if not device_matches(device, requested):
                off.append(f"{kind} {name} on {device}")
    placement: dict[str, Any] = {
        "requested_device": requested,
        "tensor_devices": dict(sorted(counts.items())),
        "off_device_count": len(off),
        "off_device": _summarise(off),
    }
    layers = [(name, m) for name, m in model.named_modules() if _is_bnb_layer(m)]
    if layers:
        misplaced = []
        for name, module in layers:
            devices = bnb_layer_devices(module)
            if not all(device_matches(d, requested) for d in devices.values()):
                misplaced.append(
                    f"{type(module).__name__} {name} ({', '.join(f'{k} on {v}' for k, v in devices.items())})"
                )
        placement["bitsandbytes_layers"] = {
            "count": len(layers),
            "off_device_count": len(misplaced),
            "off_device": _summarise(misplaced),
        }
        placement["bitsandbytes_library"] = bnb_library if bnb_library is not None else bnb_native_library()
    return placement


def ort_profiled_node_providers(profile_file: str | Path) -> dict[str, dict[str, int]]:
    """Op types per execution provider from an ONNX Runtime profile (``enable_profiling``):
    the providers the nodes really ran on, ``{"CUDAExecutionProvider": {"MatMul": 36}, ...}``."""
    events = json.loads(Path(profile_file).read_text())
    seen: dict[str, tuple[str, str]] = {}
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") == "Node" and "provider" in args:
            seen[event.get("name", "").removesuffix("_kernel_time")] = (args["provider"], args.get("op_name", "?"))
    table: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for provider, op in seen.values():
        table[provider][op] += 1
    return {provider: dict(sorted(ops.items())) for provider, ops in sorted(table.items())}


def ort_placement(session, requested: str, node_providers: dict[str, dict[str, int]] | None = None) -> dict:
    """The providers an ONNX Runtime session really has (``get_providers()``), what was asked
    for, and (when profiled) the op types each provider ran."""
    placement: dict[str, Any] = {"requested_device": requested, "providers": list(session.get_providers())}
    if node_providers is not None:
        placement["node_providers"] = node_providers
    return placement


def fallback_parts(placement: dict) -> list[str]:
    """The parts of a configuration meant for a GPU that are on the CPU (empty: none, or a CPU request).

    Reads a placement dict as :func:`torch_placement` / :func:`ort_placement` write it (also
    nested under the keys a predictor adds).
    """
    requested = placement.get("requested_device", "cpu")
    if not requested.startswith("cuda"):
        return []
    parts = []
    if placement.get("off_device_count"):
        parts.append(
            f"{placement['off_device_count']} of {sum(placement['tensor_devices'].values())} "
            f"parameters/buffers not on {requested}: {', '.join(placement['off_device'])}"
        )
    layers = placement.get("bitsandbytes_layers")
    if layers:
        if layers["off_device_count"]:
            parts.append(
                f"{layers['off_device_count']} of {layers['count']} bitsandbytes layers not on {requested}: "
                + ", ".join(layers["off_device"])
            )
        library = placement.get("bitsandbytes_library") or {}
        if library.get("backend") not in BNB_GPU_BACKENDS:
            parts.append(
                f"bitsandbytes runs its {library.get('backend')} backend "
                f"({library.get('native_library')}), not CUDA kernels"
            )
    if "providers" in placement:
        providers = placement["providers"]
        if not providers or providers[0] != "CUDAExecutionProvider":
            parts.append(f"ONNX Runtime session providers are {providers} (not led by CUDAExecutionProvider)")
        cpu_ops = (placement.get("node_providers") or {}).get("CPUExecutionProvider", {})
        compute = {op: n for op, n in cpu_ops.items() if op in ORT_COMPUTE_OPS}
        if compute and providers and providers[0] == "CUDAExecutionProvider":
            parts.append(
                "ONNX Runtime ran compute nodes on CPUExecutionProvider: "
                + ", ".join(f"{op} x{n}" for op, n in compute.items())
            )
    return parts
