"""``onnx``: an ONNX graph (``model.onnx``, or the file ``meta["onnx_file"]`` names) run by ONNX Runtime."""

from __future__ import annotations

from compressors.core.cache import Artifact
from compressors.execution.loaders.base import ARTIFACT_LOADERS, ArtifactLoader
from compressors.execution.predictors import OrtPredictor, ort_providers


def load_onnx(artifact: Artifact, device: str) -> OrtPredictor:
    import onnxruntime as ort

    providers = ort_providers(device)
    names = [p if isinstance(p, str) else p[0] for p in providers]
    missing = [p for p in names if p not in ort.get_available_providers()]
    if missing:
        raise RuntimeError(f"ONNX Runtime here has no {missing}; available: {ort.get_available_providers()}")
    path = str(artifact.file(artifact.meta.get("onnx_file", "model.onnx")))
    return OrtPredictor(ort.InferenceSession(path, providers=providers), device, path, providers)


ARTIFACT_LOADERS.register("onnx", ArtifactLoader("onnxruntime", load_onnx))
