"""``fp32``: the model as it is, in PyTorch eager mode. Every accuracy drop is measured against it."""

from __future__ import annotations

import dataclasses

from compressors.builders.techniques.base import TORCH_MODEL, Technique, register_technique
from compressors.core.config import Config
from compressors.core.task_kinds import TASK_CAUSAL_LM, TASK_CLASSIFICATION


@dataclasses.dataclass(frozen=True)
class Fp32Config(Config):
    """No options: float32 weights and activations, PyTorch eager."""


register_technique(Technique(
    name="fp32",
    summary="baseline: float32 PyTorch eager, no compression",
    config=Fp32Config(),
    consumes=TORCH_MODEL,
    produces=TORCH_MODEL,
    tasks=frozenset({TASK_CLASSIFICATION, TASK_CAUSAL_LM}),
    devices=frozenset({"cpu", "cuda"}),
))
