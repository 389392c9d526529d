"""``hf-torch``: a float Hugging Face model saved with ``save_pretrained`` (the fp32 base, ``fp16``/``bf16``,
``layerdrop-K``, ``distill-*``, merged ``lora``)."""

from __future__ import annotations

from compressors.core.cache import Artifact
from compressors.execution.hf import hf_auto_class
from compressors.execution.loaders.base import ARTIFACT_LOADERS, ArtifactLoader, torch_module_predictor


def hf_torch_module(artifact: Artifact):
    # dtype="auto": keep the dtype the weights were saved in (bf16 artifacts stay bf16).
    return hf_auto_class(artifact.path).from_pretrained(artifact.path, dtype="auto")


ARTIFACT_LOADERS.register("hf-torch", ArtifactLoader("torch", torch_module_predictor(hf_torch_module), hf_torch_module))
