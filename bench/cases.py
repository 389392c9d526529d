"""The benchmark matrix as data: which techniques run on which models, and the smoke subset.

A case is one configuration: model x technique chain x device tier x batch size.
Its id is ``model-technique-tier-bsN`` (``minilm-sst2-onnx-int8-cpu-bs32``), so
``-k`` selects on any part. Language-model cases add what is timed (their *scenario*):
``smollm2-135m-bnb-nf4-cpu-bs1-prefill512``, ``...-bs1-gen32`` and the ``slow``
full-test-set perplexity ``...-bs1-prefill512-fullppl``.
"""

from __future__ import annotations

import dataclasses

from compressors.hardware import TIER_DEVICE, TIERS
from compressors.models import MODELS, TASK_CAUSAL_LM, TASK_CLASSIFICATION, ModelSpec
from compressors.techniques import Chain, parse_chain

# Techniques benchmarked on every classifier unless --techniques says otherwise.
CLASSIFICATION_TECHNIQUES = (
    "fp32",
    "dynamic-int8",
    "onnx-fp32",
    "onnx-int8",
    "onnx-int8-static",
    "onnx-opt-fp32",
    "onnx-opt-int8",
    "bnb-int8",
    "bnb-fp4",
    "bnb-nf4",
    "bnb-nf4-dq",
    "torchao-int8-dyn",
    "torchao-int8-wo",
    "torchao-int8-dyn-compiled",
    "torchao-int8-wo-compiled",
    "bf16",
    "fp16",
    "custom-int8-tensor",
    "custom-int8-channel",
    "custom-int8-attn",
    "custom-int8-ffn",
    "l1-30",
    "l1-40",
    "l1-50",
    "l1-50-csr",
    "layerdrop-2",
    "layerdrop-2-noft",
    "lowrank-50",
    "lowrank-25",
    "lowrank-50-ft",
    "lowrank-25-ft",
    "lora",
    "lora-unmerged",
    "qlora",
    "distill-l3",
    # chains: each stage built and cached in turn
    "layerdrop-2+dynamic-int8",
    "layerdrop-2+onnx-int8",
    "layerdrop-2+bnb-nf4",
    "l1-50+dynamic-int8",
)
BATCH_SIZES = (1, 32)

# The fast subset CI runs (`-m smoke`): the baseline, one PyTorch and one ONNX Runtime quantizer;
# for the embedded LM the baseline's prefill and generation and the per-channel absmax quantizer's
# prefill (GGUF conversion ~20 s once, then one 16k-token perplexity evaluation per configuration,
# about a minute on 2 cores: ~4 minutes in all, cold). Not dynamic-int8, which fails its
# perplexity budget on SmolLM2 (see bench/budgets.toml).
SMOKE = {
    "minilm-sst2-fp32-cpu-bs32",
    "minilm-sst2-dynamic-int8-cpu-bs32",
    "minilm-sst2-onnx-int8-cpu-bs1",
    "minilm-sst2-onnx-int8-cpu-bs32",
    "smollm2-135m-fp32-cpu-bs1-prefill512",
    "smollm2-135m-fp32-cpu-bs1-gen32",
    "smollm2-135m-custom-int8-channel-cpu-bs1-prefill512",
}


# Techniques benchmarked on every causal LM unless --techniques says otherwise.
LM_TECHNIQUES = (
    "fp32",
    "dynamic-int8",
    "dynamic-int8-attn",
    "bnb-int8",
    "bnb-fp4",
    "bnb-nf4",
    "bf16",
    "custom-int8-tensor",
    "custom-int8-channel",
    "custom-int8-attn",
    "custom-int8-ffn",
)


@dataclasses.dataclass(frozen=True)
class LMScenario:
    """What a language-model case times, and on which tokens its perplexity is measured.

    Args:
        name: the last part of the test id.
        timed: ``"prefill"`` (one forward pass over ``prefill_tokens`` tokens, batch 1) or
            ``"generate"`` (greedy decoding of ``new_tokens`` tokens after a fixed prompt).
        full_test: perplexity on the whole WikiText-2 test set (``slow``) instead of the
            CPU tier's token budget (``compressors.metrics.CPU_EVAL_TOKENS``).
    """

    name: str
    timed: str
    full_test: bool = False
    prefill_tokens: int = 512
    new_tokens: int = 32

    @property
    def eval_scope(self) -> str:
        return "full" if self.full_test else "budget"


LM_SCENARIOS = (
    LMScenario("prefill512", "prefill"),
    LMScenario("gen32", "generate"),
    LMScenario("prefill512-fullppl", "prefill", full_test=True),
)


@dataclasses.dataclass(frozen=True)
class Case:
    model: ModelSpec
    chain: Chain
    tier: str
    batch_size: int
    scenario: LMScenario | None = None  # language models only

    @property
    def device(self) -> str:
        return TIER_DEVICE[self.tier]

    @property
    def config_id(self) -> str:
        """The configuration without batch size: what accuracy and memory are measured for."""
        return f"{self.model.name}-{self.chain.name}-{self.tier}"

    @property
    def id(self) -> str:
        suffix = f"-{self.scenario.name}" if self.scenario else ""
        return f"{self.config_id}-bs{self.batch_size}{suffix}"

    @property
    def slow(self) -> bool:
        return self.chain.slow or bool(self.scenario and self.scenario.full_test)

    def unsupported_reason(self) -> str | None:
        """Why this case cannot run anywhere (not: why it cannot run on this machine)."""
        if self.device not in self.chain.devices:
            return f"{self.chain.name} runs on {sorted(self.chain.devices)}, not on {self.device} ({self.tier})"
        if self.model.task not in self.chain.tasks:
            return f"{self.chain.name} does not apply to {self.model.task} models"
        return None


def classification_cases(model_names=None, technique_names=None, tiers=TIERS, batch_sizes=BATCH_SIZES) -> list[Case]:
    """Every classification case for the given names (default: all registered models, the default techniques)."""
    models = [MODELS.get(n) for n in (model_names or MODELS.names())]
    chains = [parse_chain(n) for n in (technique_names or CLASSIFICATION_TECHNIQUES)]
    return [
        Case(model, chain, tier, bs)
        for model in models
        if model.task == TASK_CLASSIFICATION
        for chain in chains
        for tier in tiers
        for bs in batch_sizes
    ]


def lm_cases(model_names=None, technique_names=None, tiers=TIERS, scenarios=LM_SCENARIOS) -> list[Case]:
    """Every language-model case (batch 1) for the given names (default: all causal LMs, :data:`LM_TECHNIQUES`)."""
    models = [MODELS.get(n) for n in (model_names or MODELS.names())]
    chains = [parse_chain(n) for n in (technique_names or LM_TECHNIQUES)]
    return [
        Case(model, chain, tier, 1, scenario)
        for model in models
        if model.task == TASK_CAUSAL_LM
        for chain in chains
        for tier in tiers
        for scenario in scenarios
    ]
