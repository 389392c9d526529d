"""Hugging Face model folders: the files that travel with every artifact, saving one, loading one.

Every artifact of a Hugging Face model carries its config and tokenizer files (so it loads on
its own). :func:`save_hf_model` enforces the order that matters: side files copied first, then
``save_pretrained``, which rewrites ``config.json`` with what changed (a shrunk layer count, a
new dtype, a quantization config).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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


def copy_side_files(src: Path, dst: Path) -> None:
    """Copy config and tokenizer files (not weights) so every artifact loads on its own."""
    for name in MODEL_SIDE_FILES:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, Path(dst) / name)


def save_hf_model(model, side_files_from: Path, out: Path) -> None:
    """Save ``model`` (safetensors) into ``out`` with the tokenizer and side files of
    ``side_files_from``; the config is the model's own (written after the copied one)."""
    copy_side_files(side_files_from, out)
    model.save_pretrained(out, safe_serialization=True)


def is_causal_lm_folder(folder) -> bool:
    """Whether the Hugging Face model saved in ``folder`` is a causal LM (by its config's
    ``architectures``: ``...ForCausalLM``, ``...LMHeadModel``), not a sequence classifier."""
    config = json.loads((Path(folder) / "config.json").read_text())
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.get("architectures") or [])


def hf_auto_class(folder):
    """The ``transformers`` Auto class that loads the model saved in ``folder``."""
    import transformers

    if is_causal_lm_folder(folder):
        return transformers.AutoModelForCausalLM
    return transformers.AutoModelForSequenceClassification
