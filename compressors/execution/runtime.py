"""Loading an artifact as a :class:`~compressors.execution.predictors.Predictor`, whatever its kind.

An artifact's kind (``hf-torch``, ``torch-dynamic-int8``, ``onnx``, ...) names the loader that turns
it into a predictor. Every kind's loader lives in :mod:`compressors.execution.loaders` (techniques
only build); importing this module imports all of them, so :data:`ARTIFACT_LOADERS` is complete
here. Loaders keep their heavy imports (torch, onnxruntime) inside functions, so the isolated memory
probe of an ONNX model never imports torch and vice versa.

The predictors themselves (:class:`TorchPredictor`, :class:`OrtPredictor`) are in
:mod:`compressors.execution.predictors`; they are importable from here too.
"""

from __future__ import annotations

from compressors.core.cache import Artifact
from compressors.execution.loaders import ARTIFACT_LOADERS, ArtifactLoader
from compressors.execution.predictors import (
    RUNTIME_IMPORTS,
    Encoded,
    OrtPredictor,
    Predictor,
    TorchPredictor,
    ort_providers,
)

__all__ = ["ARTIFACT_LOADERS", "RUNTIME_IMPORTS", "ArtifactLoader", "Encoded", "OrtPredictor", "Predictor",
           "TorchPredictor", "load_predictor", "load_torch_module", "loader_for", "ort_providers"]


def loader_for(artifact: Artifact) -> ArtifactLoader:
    return ARTIFACT_LOADERS.get(artifact.kind)


def load_predictor(artifact: Artifact, device: str = "cpu") -> Predictor:
    """Load a cached artifact as a predictor on ``device`` (``"cpu"`` or ``"cuda"``)."""
    return loader_for(artifact).load(artifact, device)


def load_torch_module(artifact: Artifact):
    """The float PyTorch model an artifact holds, on CPU in eval mode (what a chain's next stage takes)."""
    loader = loader_for(artifact)
    if loader.module is None:
        raise ValueError(f"a {artifact.kind!r} artifact holds no float PyTorch model to compress further")
    return loader.module(artifact).eval()
