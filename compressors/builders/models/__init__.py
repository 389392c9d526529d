"""Model registry: what a model name means, where its weights come from, how to load them.

:mod:`.spec` (the type, the registry, task names), :mod:`.hub` (hub I/O), :mod:`.embedded`
(MiniLM fine-tuned on SST-2, SmolLM2 from its GGUF file), :mod:`.catalog` (the registrations).
"""

from compressors.builders.models import catalog  # noqa: F401  (registers the models)
from compressors.builders.models.embedded import MINILM_SST2_RECIPE, SMOLLM2_VERSION, SST2_LABELS  # noqa: F401
from compressors.builders.models.hub import hub_causal_lm, hub_classifier  # noqa: F401
from compressors.builders.models.spec import (  # noqa: F401
    MODELS,
    TASK_CAUSAL_LM,
    TASK_CLASSIFICATION,
    TASKS,
    TORCH_LIBS,
    ModelSpec,
    ModelUnavailable,
)
