"""Loaders of every artifact kind: one module per kind (or family of kinds), each registering its
:class:`~compressors.execution.loaders.base.ArtifactLoader` in :data:`ARTIFACT_LOADERS`. Techniques
(``compressors.builders.techniques``) only build; what they write is read here, below them, so the
measuring process loads any artifact without importing a builder.

Adding an artifact kind = one module here that calls ``ARTIFACT_LOADERS.register`` (with the file
types beyond the common ones it may pull from a remote cache, or ``pickled=True`` and the classes its
pickle names) + one import line below. Heavy imports (torch, onnxruntime, openvino) stay inside
functions: importing this package imports none of them.
"""

from compressors.execution.loaders import (  # noqa: F401  (registration)
    absmax,
    bnb,
    dynamic_int8,
    hf,
    lora,
    lowrank,
    onnx,
    openvino,
    sparse,
    torchao,
)
from compressors.execution.loaders.base import ARTIFACT_LOADERS, ArtifactLoader  # noqa: F401
