"""``torch-dynamic-int8``: a model quantized by PyTorch dynamic quantization (``dynamic-int8*``), a
``torch.save`` of the whole module (packed int8 weights + scales; library classes only, keyed by their
versions)."""

from __future__ import annotations

from compressors.core.cache import Artifact
from compressors.execution.loaders.base import (
    ARTIFACT_LOADERS,
    HF_MODEL_PICKLE_PACKAGES,
    ArtifactLoader,
    load_pickled_module,
)
from compressors.execution.predictors import TorchPredictor

DYNAMIC_INT8_WEIGHTS = "model_dynamic_int8.pt"


def load_dynamic_int8(artifact: Artifact, device: str) -> TorchPredictor:
    if device != "cpu":
        raise RuntimeError(f"dynamic-int8 kernels run on CPU only, not {device!r}")
    import torch

    return load_pickled_module(artifact, DYNAMIC_INT8_WEIGHTS, device,
                               {"quantized_engine": torch.backends.quantized.engine})


ARTIFACT_LOADERS.register("torch-dynamic-int8", ArtifactLoader("torch", load_dynamic_int8, pickled=True,
                                                         pickle_packages=HF_MODEL_PICKLE_PACKAGES))
