"""The benchmark matrix, derived from the registries: which techniques run on which models, and the smoke subset.

A case is one configuration and one thing timed: model x technique chain x device tier x
scenario (a batch size; for language models a prefill or a generation). Its id is
``model-technique-tier-bsN`` (``minilm-sst2-onnx-int8-cpu-bs32``), plus the scenario for
language models (``smollm2-135m-bnb-nf4-cpu-bs1-prefill512``), so ``-k`` selects on any part.

The default techniques of a model are those registered for its task's default matrix
(``Technique.default_for``) plus :data:`compressors.builders.techniques.DEFAULT_CHAINS`; the scenarios
are its task's (:mod:`compressors.evaluation.tasks`). Nothing is listed here by hand but the smoke subset.
"""

from __future__ import annotations

import dataclasses

from compressors.builders.models import MODELS, ModelSpec
from compressors.builders.techniques import Chain, default_techniques, parse_chain
from compressors.evaluation.tasks import Scenario, Task, task_for
from compressors.machine.hardware import TIER_DEVICE, TIERS

# The fast subset CI runs (`-m smoke`): the baseline, one PyTorch, one ONNX Runtime and one OpenVINO
# (NNCF) quantizer;
# for the embedded LM the baseline's prefill and generation and the per-channel absmax quantizer's
# prefill (GGUF conversion ~20 s once, then one 16k-token perplexity evaluation per configuration,
# about a minute on 2 cores: ~4 minutes in all, cold). Not dynamic-int8, which misses its
# perplexity budget on SmolLM2 (see bench/budgets.toml).
SMOKE = {
    "minilm-sst2-fp32-cpu-bs32",
    "minilm-sst2-dynamic-int8-cpu-bs32",
    "minilm-sst2-onnx-int8-cpu-bs1",
    "minilm-sst2-onnx-int8-cpu-bs32",
    "minilm-sst2-openvino-int8-cpu-bs32",
    "smollm2-135m-fp32-cpu-bs1-prefill512",
    "smollm2-135m-fp32-cpu-bs1-gen32",
    "smollm2-135m-custom-int8-channel-cpu-bs1-prefill512",
}


@dataclasses.dataclass(frozen=True)
class Case:
    model: ModelSpec
    chain: Chain
    tier: str
    scenario: Scenario

    @property
    def task(self) -> Task:
        return task_for(self.model)

    @property
    def batch_size(self) -> int:
        return self.scenario.batch_size

    @property
    def device(self) -> str:
        return TIER_DEVICE[self.tier]

    @property
    def config_id(self) -> str:
        """The configuration without what is timed: what quality and memory are measured for."""
        return f"{self.model.name}-{self.chain.name}-{self.tier}"

    @property
    def id(self) -> str:
        return f"{self.config_id}-{self.scenario.suffix}"

    @property
    def slow(self) -> bool:
        return self.chain.slow or self.scenario.full_test

    @property
    def extended(self) -> str | None:
        """Why this case is outside the default run (``--extended`` runs it), or None: whole-test-set
        perplexity (about 15 minutes per language-model configuration on 2 cores), and techniques that
        ``torch.compile`` when loaded (minutes in the measurement process and again in the timed one)."""
        if self.scenario.full_test:
            return "perplexity over the whole WikiText-2 test set (~15 min per configuration on 2 cores)"
        if any(stage.compiles for stage in self.chain.build_stages):
            return f"{self.chain.name} runs torch.compile when loaded (minutes per process)"
        return None

    def with_chain(self, name: str) -> Case:
        """The same model, tier and scenario with another technique (the baseline's case)."""
        return dataclasses.replace(self, chain=parse_chain(name))

    def unsupported_reason(self) -> str | None:
        """Why this case cannot run anywhere (not: why it cannot run on this machine)."""
        if self.device not in self.chain.devices:
            return f"{self.chain.name} runs on {sorted(self.chain.devices)}, not on {self.device} ({self.tier})"
        if self.model.task not in self.chain.tasks:
            return f"{self.chain.name} does not apply to {self.model.task} models"
        if getattr(self.model, "user", False):
            return user_model_reason(self.model, self.chain)
        return None


def user_model_reason(model: ModelSpec, chain: Chain) -> str | None:
    """Why a chain cannot run on a model given by path or hub id: a stage that trains from the pretrained
    encoder (which such a model does not name), or a recipe that does not fit its architecture."""
    for stage in chain.build_stages:
        if stage.starts_from_pretrained and model.pretrained is None:
            return (f"{chain.name} trains from the pretrained encoder a model was fine-tuned from, and "
                    f"{model.origin} does not name one")
    config = model.architecture(model) if model.architecture else {}
    config = config or {}
    reason = chain.architecture_reason(config.get("model_type"), (config.get("architectures") or [None])[0])
    if reason:
        return f"{chain.name} does not fit {model.origin}: {reason}"
    if any(stage.layers_after for stage in chain.build_stages) and model.encoder_layers() is None:
        return (f"{chain.name} depends on the layer count (it removes layers or keeps some float), and the layer "
                f"count of {model.origin} is not in its config")
    return None


def cases(task: str, model_names=None, technique_names=None, tiers=TIERS, batch_sizes=None) -> list[Case]:
    """Every case of ``task``'s models for the given models (names of registered ones, or
    :class:`ModelSpec` objects of models given by path or hub id; default: all registered models of that
    task), the task's default techniques and scenarios; ``batch_sizes`` keeps only those scenarios."""
    models = [n if isinstance(n, ModelSpec) else MODELS.get(n) for n in (model_names or MODELS.names())]
    models = [m for m in models if m.task == task]
    if not models:
        return []
    chains = [parse_chain(n) for n in (technique_names or default_techniques(task))]
    scenarios = [s for s in task_for(models[0]).scenarios if batch_sizes is None or s.batch_size in batch_sizes]
    return [Case(model, chain, tier, scenario) for model in models for chain in chains for tier in tiers
            for scenario in scenarios]
