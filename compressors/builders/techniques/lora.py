"""LoRA and QLoRA: ``lora``, ``lora-unmerged``, ``qlora``.

LoRA (PEFT) trains low-rank adapters on the *pretrained* encoder the model was
fine-tuned from (``ModelSpec.pretrained``), not on the fine-tuned classifier: it is an
alternative to full fine-tuning whose cost and accuracy are the point. Adapters go on
every linear of the encoder layers (attention query/key/value/output and both
feed-forward linears; :data:`ENCODER_LINEARS`), rank 16, alpha 32, dropout 0.1; the task
head (every linear outside the encoder: BERT's ``classifier``, DistilBERT's
``pre_classifier`` + ``classifier``) is trained in full and saved with the adapter
(``modules_to_save``). The LoRA paper's query/value-only placement stays one setting away
(``LoraTrainConfig(target_modules=("query", "value"))``); every encoder linear is the default because
query/value only missed the 2 pp budget on MiniLM-L6 (see
docs/decisions/lora-placement-and-recipe.md). Training uses the suite's one loop on
:data:`LORA_RECIPE` (SST-2 train outside the held-apart slice).

- ``lora-unmerged``: the artifact is the pretrained base + the adapter; inference runs
  PEFT's unmerged modules (base matmul + low-rank path), so the adapter overhead shows.
- ``lora``: the same adapter merged into the base (``merge_and_unload``): a plain
  Hugging Face model, the deployable form, which later stages can compress further.
- ``qlora``: the base loaded in bitsandbytes NF4 (head float, see ``bnb.py``), prepared
  with ``peft.prepare_model_for_kbit_training``, adapters trained in float32 on top of the
  frozen 4-bit weights. Benchmarked as trained: 4-bit base + float adapters. The base is
  saved right after quantizing, before any forward (see ``bnb.py`` on why).

QLoRA keeps every linear outside the encoder float (``llm_int8_skip_modules``): bitsandbytes'
4-bit kernel cannot run a 2-output classifier such as DistilBERT's (same record).

A training run that is interrupted leaves nothing: the cache builds in a staging folder
and renames it only when complete.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from compressors.builders.context import BuildContext
from compressors.builders.models import SST2_LABELS, ModelUnavailable
from compressors.builders.techniques.base import PEFT_ADAPTER, TORCH_FINAL, TORCH_MODEL, register_variants
from compressors.builders.training import FineTuneRecipe
from compressors.core.cache import Artifact
from compressors.core.config import Config, check_choice, check_range
from compressors.core.task_kinds import TASK_CLASSIFICATION
from compressors.execution.hf import copy_side_files, save_hf_model
from compressors.execution.loaders.bnb import quiet_bitsandbytes
from compressors.execution.loaders.lora import ADAPTER_DIR, BASE_DIR, peft_module
from compressors.execution.nn import head_module_names

BASE_WEIGHTS, ADAPTER_WEIGHTS = f"{BASE_DIR}/model.safetensors", f"{ADAPTER_DIR}/adapter_model.safetensors"
PEFT_LIBS = ("torch", "transformers", "peft")

# 32,000 SST-2 train sentences outside the held-apart slice, one epoch, lr 1e-3 (with rank 16,
# alpha 32): chosen on the held-apart slice of train; see docs/decisions/lora-placement-and-recipe.md.
LORA_RECIPE = FineTuneRecipe(n_sentences=32000, epochs=1, lr=1e-3, batch_size=32, max_length=64, seed=0)

# Every linear of the encoder's layers, by architecture (peft has no default for DistilBERT):
# the attention projections (query/key/value and the attention output) and both feed-forward
# linears. peft matches a name or a dotted suffix, so BERT's "output.dense" covers both
# ``attention.output.dense`` and the feed-forward ``output.dense`` but not ``pooler.dense``.
ENCODER_LINEARS = {
    "bert": ("query", "key", "value", "output.dense", "intermediate.dense"),
    "roberta": ("query", "key", "value", "output.dense", "intermediate.dense"),
    "electra": ("query", "key", "value", "output.dense", "intermediate.dense"),
    "albert": ("query", "key", "value", "attention.dense", "ffn", "ffn_output"),
    "distilbert": ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"),
}


@dataclasses.dataclass(frozen=True)
class LoraTrainConfig(Config):
    """LoRA adapters on the pretrained encoder.

    Args:
        rank / alpha / dropout: LoRA rank r, scaling alpha (update scaled by alpha / r), dropout.
        target_modules: module names that get adapters (None: every encoder linear, see ENCODER_LINEARS).
        recipe: training sentences and schedule.
        base_bits: ``None`` (float base, LoRA) or ``"nf4"`` (4-bit base, QLoRA).
    """

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.1
    target_modules: tuple[str, ...] | None = None
    recipe: FineTuneRecipe = LORA_RECIPE
    base_bits: str | None = None

    def validate(self) -> None:
        name = type(self).__name__
        check_range(name, "rank", self.rank, 1, 1024)
        check_range(name, "dropout", self.dropout, 0.0, 0.9)
        check_choice(name, "base_bits", self.base_bits, {None, "nf4"})


@dataclasses.dataclass(frozen=True)
class MergeConfig(Config):
    """Merge the adapters into the base weights (``merge_and_unload``)."""


def target_modules_for(model, config: LoraTrainConfig) -> list[str]:
    if config.target_modules:
        return list(config.target_modules)
    model_type = getattr(model.config, "model_type", "")
    if model_type not in ENCODER_LINEARS:
        raise ValueError(f"no default LoRA targets for model type {model_type!r}; known: {sorted(ENCODER_LINEARS)} "
                         "(set target_modules)")
    return list(ENCODER_LINEARS[model_type])


def pretrained_encoder(ctx: BuildContext) -> Path:
    spec = ctx.model
    if spec is None or spec.pretrained is None:
        raise ModelUnavailable(f"{getattr(spec, 'name', 'this model')}: LoRA needs the pretrained encoder it was "
                               "fine-tuned from, and none is recorded for it")
    return spec.pretrained(spec, ctx)


def load_for_training(source: Path, config: LoraTrainConfig, id2label: dict[int, str] | None = None):
    """The pretrained encoder with a new head (``id2label``: the data's labels; SST-2's by default);
    NF4-quantized (head float) for QLoRA."""
    import torch
    from transformers import AutoModelForSequenceClassification

    names = id2label or SST2_LABELS
    labels = {"num_labels": len(names), "id2label": names, "label2id": {v: k for k, v in names.items()}}
    torch.manual_seed(config.recipe.seed)  # the new head's initialisation
    if config.base_bits is None:
        return AutoModelForSequenceClassification.from_pretrained(source, **labels), []
    from compressors.builders.techniques.bnb import BnbConfig, bnb_quantization_config, modules_kept_float

    quiet_bitsandbytes()
    bnb = BnbConfig(bits=4, quant_type="nf4")
    torch.manual_seed(config.recipe.seed)
    head, misfits = modules_kept_float(AutoModelForSequenceClassification.from_pretrained(source, **labels), bnb)
    torch.manual_seed(config.recipe.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, quantization_config=bnb_quantization_config(bnb, head + misfits), device_map="cpu", **labels)
    return model, head + misfits


def attach_lora(model, config: LoraTrainConfig):
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=config.rank, lora_alpha=config.alpha,
                      lora_dropout=config.dropout, target_modules=target_modules_for(model, config),
                      modules_to_save=sorted(head_module_names(model)))
    return get_peft_model(model, lora)


def _build_lora(parent: Artifact, out: Path, config: LoraTrainConfig, ctx: BuildContext) -> dict:
    from transformers import AutoTokenizer

    from compressors.builders.training import train_classifier

    source = pretrained_encoder(ctx)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model, kept_float = load_for_training(source, config, ctx.require_data().id2label)
    (out / BASE_DIR).mkdir()
    copy_side_files(parent.path, out / BASE_DIR)  # tokenizer; config.json is rewritten by save_pretrained
    model.save_pretrained(out / BASE_DIR, safe_serialization=True)  # the frozen base, before any forward pass
    if config.base_bits is not None:
        from peft import prepare_model_for_kbit_training

        # Gradient checkpointing off: on CPU it only trades time for memory this small model does not need.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = attach_lora(model, config)
    rest, _held = ctx.require_data().held_apart()
    label = "QLoRA" if config.base_bits else "LoRA"
    report = train_classifier(model, tokenizer, rest, config.recipe, progress=ctx.progress,
                              description=f"{label} on {source.name}")
    model.save_pretrained(out / ADAPTER_DIR, safe_serialization=True)
    copy_side_files(parent.path, out)
    return {"training": report.to_dict(), "pretrained_encoder": str(source),
            "target_modules": target_modules_for(model.base_model.model, config),
            "trained_in_full": sorted(head_module_names(model.base_model.model)),
            "base_bits": config.base_bits, "float_linear_modules": kept_float}


def _build_merge(parent: Artifact, out: Path, config: MergeConfig, ctx: BuildContext) -> dict:
    model = peft_module(parent).merge_and_unload()
    save_hf_model(model, parent.path, out)
    return {"merged_from": parent.key, "training": parent.meta.get("training"),
            "target_modules": parent.meta.get("target_modules")}


_LORA = dict(tasks=frozenset({TASK_CLASSIFICATION}), devices=frozenset({"cpu", "cuda"}), requires=("peft",),
             version_packages=PEFT_LIBS, tolerance=None)
_TRAINED = dict(consumes=TORCH_MODEL, build=_build_lora, artifact_kind="peft-lora",
                weights=(BASE_WEIGHTS, ADAPTER_WEIGHTS), trains=True, uses_data=True, starts_from_pretrained=True,
                model_types=frozenset(ENCODER_LINEARS))
register_variants(
    _LORA,
    [
        dict(
            name="lora-unmerged",
            config=LoraTrainConfig(),
            produces=PEFT_ADAPTER,
            **_TRAINED,
            summary="PEFT LoRA (r=16, alpha 32) on every linear of the pretrained encoder, head trained; "
            "adapters unmerged",
        ),
        dict(
            name="lora",
            config=MergeConfig(),
            consumes=PEFT_ADAPTER,
            produces=TORCH_MODEL,
            build=_build_merge,
            artifact_kind="hf-torch",
            weights=("model.safetensors",),
            implies=("lora-unmerged",),
            summary="lora-unmerged's adapters merged into the base (merge_and_unload): "
            "a plain model, the deployable form",
        ),
        dict(
            name="qlora",
            kernels=("bnb-4bit",),
            config=LoraTrainConfig(base_bits="nf4"),
            produces=TORCH_FINAL,
            **_TRAINED,
            requires=("peft", "bitsandbytes", "accelerate"),
            version_packages=PEFT_LIBS + ("bitsandbytes",),
            summary="QLoRA: the pretrained encoder in bitsandbytes NF4 (head float) + LoRA adapters trained on top",
        ),
    ],
)
