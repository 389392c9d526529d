"""``torch-absmax-int8``: the hand-written absmax INT8 model (``custom-int8-*``), a ``torch.save`` of the whole
module whose quantized linears are :class:`compressors.execution.int8_linear.Int8Linear`."""

from __future__ import annotations

from compressors.core.cache import Artifact
from compressors.execution.loaders.base import (
    ARTIFACT_LOADERS,
    HF_MODEL_PICKLE_PACKAGES,
    ArtifactLoader,
    load_pickled_module,
)
from compressors.execution.predictors import TorchPredictor

ABSMAX_WEIGHTS = "model_absmax_int8.pt"
# The class the saved pickle names (a string: importing it would import torch with the registry); a unit
# test checks that it imports as that very class.
INT8_LINEAR = "compressors.execution.int8_linear.Int8Linear"


def load_absmax(artifact: Artifact, device: str) -> TorchPredictor:
    return load_pickled_module(artifact, ABSMAX_WEIGHTS, device)


ARTIFACT_LOADERS.register("torch-absmax-int8",
                          ArtifactLoader("torch", load_absmax, pickled=True, pickles=(INT8_LINEAR,),
                                         pickle_packages=HF_MODEL_PICKLE_PACKAGES))
