"""Technique registry. Importing this package registers every technique.

Adding a technique = one new module here that calls ``register_technique`` (and
``ARTIFACT_LOADERS.register`` for a new artifact kind) + one import line below.
Modules keep torch/onnxruntime imports inside functions (a unit test checks it),
so listing techniques and collecting the suite stay fast.
"""

from compressors.techniques import (  # noqa: F401  (registration order)
    absmax,
    baseline,
    bnb,
    distill,
    half,
    layerdrop,
    lora,
    lowrank,
    onnx,
    pruning,
    quantization,
    torchao_quant,
)
from compressors.techniques.base import (  # noqa: F401
    TECHNIQUES,
    Chain,
    ChainError,
    Technique,
    build_chain,
    get_technique,
    parse_chain,
    register_technique,
)
