"""``torch-bnb``: a bitsandbytes-quantized model saved with ``save_pretrained`` (``bnb-*``; its
quantization config in ``config.json``), reloaded without materialising float weights; ``placement``
records which bitsandbytes backend ran."""

from __future__ import annotations

from compressors.core.cache import Artifact
from compressors.execution.hf import hf_auto_class
from compressors.execution.loaders.base import ARTIFACT_LOADERS, ArtifactLoader
from compressors.execution.predictors import TorchPredictor


def quiet_bitsandbytes() -> None:
    """bitsandbytes logs a cast warning on every 8-bit matmul; keep errors only."""
    import logging

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def bnb_backend(model) -> dict:
    """Which bitsandbytes code actually runs the quantized linears."""
    import collections

    import bitsandbytes
    import torch

    info = {"bitsandbytes": bitsandbytes.__version__}
    try:
        from bitsandbytes import cextension

        info["backend"] = getattr(cextension, "BNB_BACKEND", "unknown")
        library = getattr(cextension, "lib", None)
        info["native_library"] = getattr(getattr(library, "_lib", None), "_name", None) or type(library).__name__
    except Exception as exc:  # noqa: BLE001  (reporting only: never fail a run over it)
        info["backend"] = f"unknown ({exc})"
    devices = {str(p.device) for p in model.parameters()}
    if devices == {"cpu"}:
        from bitsandbytes import functional

        bf16 = bool(getattr(functional, "has_avx512bf16", lambda: False)())
        info["cpu_4bit_kernel"] = "native AVX512-BF16 gemv" if bf16 else "dequantize + torch matmul"
        info["cpu_int8_kernel"] = (
            "torch._int_mm"
            if torch.backends.cpu.get_cpu_capability().startswith("AVX512")
            else "dequantize + torch matmul"
        )
    info["quantized_modules"] = dict(
        collections.Counter(type(m).__name__ for m in model.modules() if type(m).__module__.startswith("bitsandbytes"))
    )
    return info


def load_bnb(artifact: Artifact, device: str) -> TorchPredictor:
    quiet_bitsandbytes()
    model = hf_auto_class(artifact.path).from_pretrained(artifact.path, device_map=device)
    return TorchPredictor(model, device, {"bitsandbytes": bnb_backend(model)})


ARTIFACT_LOADERS.register("torch-bnb", ArtifactLoader("torch", load_bnb))
