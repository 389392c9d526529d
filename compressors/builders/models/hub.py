"""Hub models: public fine-tunes loaded with ``huggingface_hub.snapshot_download`` + ``from_pretrained``
exactly as a user would, from the HF cache or the network; unavailable ones say how to get them.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from compressors.builders.context import BuildContext
from compressors.builders.models.spec import (
    TASK_CAUSAL_LM,
    TASK_CLASSIFICATION,
    TORCH_LIBS,
    ModelSpec,
    ModelUnavailable,
)
from compressors.core.cache import Artifact, library_versions


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
        architecture=hub_architecture,
    )


def hub_causal_lm(name: str, repo_id: str, description: str) -> ModelSpec:
    return ModelSpec(name=name, task=TASK_CAUSAL_LM, source="hub", description=description,
                     build_base=_build_hub_model, check_available=_check_hub, repo_id=repo_id,
                     architecture=hub_architecture)


def hub_architecture(spec: ModelSpec) -> dict | None:
    """The hub model's config.json if the local HF cache holds it (never the network)."""
    import json

    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(spec.repo_id, "config.json", revision=spec.revision)
    return json.loads(Path(path).read_text()) if isinstance(path, str) else None
