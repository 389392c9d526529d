"""``peft-lora``: a pretrained base (``base/``, float or bitsandbytes NF4) + PEFT LoRA adapters
(``adapter/``), run unmerged (``lora-unmerged``, ``qlora``)."""

from __future__ import annotations

from compressors.core.cache import Artifact
from compressors.execution.loaders.base import ARTIFACT_LOADERS, ArtifactLoader
from compressors.execution.loaders.bnb import bnb_backend, quiet_bitsandbytes
from compressors.execution.predictors import TorchPredictor

BASE_DIR, ADAPTER_DIR = "base", "adapter"


def peft_module(artifact: Artifact, device: str = "cpu"):
    """The base + adapter as a PEFT model (unmerged), on ``device``."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    if artifact.meta.get("base_bits"):
        quiet_bitsandbytes()
        base = AutoModelForSequenceClassification.from_pretrained(artifact.path / BASE_DIR, device_map=device)
        return PeftModel.from_pretrained(base, artifact.path / ADAPTER_DIR).eval()
    base = AutoModelForSequenceClassification.from_pretrained(artifact.path / BASE_DIR)
    return PeftModel.from_pretrained(base, artifact.path / ADAPTER_DIR).to(device).eval()


def load_peft(artifact: Artifact, device: str) -> TorchPredictor:
    model = peft_module(artifact, device)
    extra = {"adapters": "unmerged (PEFT LoRA modules)", "base_bits": artifact.meta.get("base_bits")}
    if artifact.meta.get("base_bits"):
        extra["bitsandbytes"] = bnb_backend(model)
    return TorchPredictor(model, device, extra)


# .md: the model card PEFT writes beside the adapter (adapter/README.md), text
ARTIFACT_LOADERS.register("peft-lora", ArtifactLoader("torch", load_peft, remote_file_types=frozenset({".md"})))
