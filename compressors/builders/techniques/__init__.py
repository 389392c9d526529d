"""Technique registry. Importing this package registers every technique.

Adding a technique = one new module here that calls ``register_technique`` + one import line below
(and, for a new artifact kind, its loader in ``compressors.execution.loaders``: techniques only build).
Modules keep torch/onnxruntime imports inside functions (a unit test checks it),
so listing techniques and collecting the suite stay fast.
"""

from compressors.builders.techniques import (  # noqa: F401  (registration order)
    absmax,
    baseline,
    bnb,
    distill,
    half,
    layerdrop,
    lora,
    lowrank,
    onnx,
    openvino,
    pruning,
    quantization,
    torchao_quant,
)
from compressors.builders.techniques.base import (  # noqa: F401
    DEFAULT_CHAINS,
    TECHNIQUES,
    Chain,
    ChainError,
    Technique,
    build_chain,
    default_techniques,
    get_technique,
    parse_chain,
    register_default_chain,
    register_technique,
)

# Chains benchmarked by default (each stage built and cached in turn): layer dropping or pruning
# followed by a quantizer, the combinations a user would try first.
for _chain in ("layerdrop-2+dynamic-int8", "layerdrop-2+onnx-int8", "layerdrop-2+bnb-nf4", "l1-50+dynamic-int8",
               "layerdrop-2+openvino-int8", "distill-l3+openvino-int8"):
    register_default_chain(_chain)

# The float fallback (<recipe>-fbN) wraps the quantizers above: registered after every technique, so their
# registration order (the default matrix's order) stays what it was.
from compressors.builders.techniques import fallback  # noqa: E402, F401
