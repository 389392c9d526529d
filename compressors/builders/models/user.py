"""Models given on the command line next to registered names: ``--models ./my-model`` (a folder as
``save_pretrained`` writes it), ``--models /abs/path`` or ``--models hub:org/name`` (a hub id).

A user model is checked when the run is collected, with cheap checks only (its config, task, remote
code, tokenizer and its weights' tensor table: safetensors headers, pickle checkpoints through PyTorch's
weights-only loader; no weights loaded into a model), so a bad folder stops the run with one line before
anything is built. Its base artifact is the model re-saved as float32
safetensors with its tokenizer, keyed on the content of the files that make it, not on its path.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import json
import os
import re
from pathlib import Path

from compressors import CompressbenchError, warn_user
from compressors.builders.context import BuildContext
from compressors.builders.models.hub import _auto_class, resolve_hub_snapshot
from compressors.builders.models.spec import (
    TASK_CAUSAL_LM,
    TASK_CLASSIFICATION,
    TORCH_LIBS,
    ModelSpec,
    ModelUnavailable,
)
from compressors.core.cache import Artifact, library_versions
from compressors.core.hashing import sha256_file

HUB_PREFIX = "hub:"
SUPPORTED_ARCHITECTURE_SUFFIXES = {"ForSequenceClassification": TASK_CLASSIFICATION, "ForCausalLM": TASK_CAUSAL_LM}
TOKENIZER_FILES_HINT = "tokenizer.json / vocab.txt / tokenizer_config.json ..."
# The files of a model folder that change the built model; anything else there (README, .git, a
# trainer's optimizer.pt next to its checkpoint) is neither hashed into the key nor needed.
_CONFIG_FILES = ("config.json", "generation_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "vocab.txt", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")
_TOKENIZER_PATTERNS = ("*.model", "*.tiktoken")  # sentencepiece and tiktoken vocabularies


class UserModelError(CompressbenchError):
    """A model given on the command line cannot be used; the message (one line) says why."""


def parse_model_argument(arg: str) -> tuple[str, str]:
    """What one ``--models`` entry names.

    Returns ``("registered", name)``, ``("local", path as given)`` or ``("hub", "org/name")``. A path
    is anything starting with ``.``, ``/`` or ``~`` or holding a path separator, so a folder is never
    mistaken for a hub id (the hub needs the explicit ``hub:`` prefix). Raises :class:`UserModelError`
    for a malformed hub id.
    """
    if arg.startswith(HUB_PREFIX):
        repo = arg[len(HUB_PREFIX):]
        how = "a hub id is hub:org/name, e.g. hub:distilbert/distilgpt2"
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise UserModelError(f"--models {arg}: {how}")
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(repo)
        except HFValidationError as exc:
            raise UserModelError(f"--models {arg}: {how} ({_one_line(exc)})") from exc
        return "hub", repo
    if arg.startswith((".", "/", "~")) or os.sep in arg or "/" in arg:
        return "local", arg
    return "registered", arg


class RepeatedModelWarning(UserWarning):
    """One model named twice in ``--models`` (``./m,./m/``, a symlink to ``./m``): it is benchmarked once."""


def model_location(arg: str) -> str | None:
    """Where a ``--models`` entry points, to tell two spellings of one model apart: a folder's real path
    (``~``, ``..``, a trailing separator and symlinks resolved) or ``hub:org/name``; None for a registered
    name. Raises :class:`UserModelError` for a malformed hub id."""
    kind, value = parse_model_argument(arg)
    if kind == "local":
        return str(Path(value).expanduser().resolve())
    return f"{HUB_PREFIX}{value}" if kind == "hub" else None


def repeated_model(entry: str, arg: str, seen: dict[str, str]) -> bool:
    """Whether ``arg`` names a model that an earlier ``--models`` entry named already, so it is not made a
    second model (its tests would repeat the first's and its plan announce builds that never happen).

    Args:
        entry: the ``--models`` entry as given (a path, a hub id, or a model named in the settings table).
        arg: the folder or ``hub:org/name`` it stands for (``entry`` itself unless it is a named model).
        seen: :func:`model_location` -> the entry that named it first; ``arg``'s location is added when new.

    A repeat is said once, in one :class:`RepeatedModelWarning` line naming both entries and the place.
    """
    location = model_location(arg)
    if location is None:
        return False
    first = seen.setdefault(location, entry)
    if first == entry:
        return False
    what = "folder" if not location.startswith(HUB_PREFIX) else "hub model"
    warn_user(RepeatedModelWarning(f"--models {entry}: the same {what} as {first} ({location}); benchmarked once"))
    return True


def _supported() -> list[str]:
    return [f"*{suffix} ({task})" for suffix, task in SUPPORTED_ARCHITECTURE_SUFFIXES.items()]


def detect_task(config: dict, where: str) -> str:
    """The task of a model from its ``config.json`` (``architectures[0]``, the class that saved it).

    ``where`` starts the error message (``"--models ./my-model"``). Raises :class:`UserModelError`
    when the class is missing or is not one the suite benchmarks.
    """
    architectures = config.get("architectures")
    if not isinstance(architectures, list) or not architectures or not isinstance(architectures[0], str):
        raise UserModelError(f'{where}: config.json has no "architectures" (the model class that saved it), so its '
                             f"task is unknown; the suite takes {' or '.join(_supported())} models")
    architecture = architectures[0]
    for suffix, task in SUPPORTED_ARCHITECTURE_SUFFIXES.items():
        if architecture.endswith(suffix):
            return task
    raise UserModelError(f"{where}: {architecture} is neither {' nor '.join(_supported())}")


def model_slug(folder_or_repo: str, taken: set[str]) -> str:
    """A short test-id name for a user model: the folder's last name (or the repo's name), lowercase,
    runs of other characters than ``[a-z0-9.]`` made ``-``; ``-2``, ``-3``... appended while it
    clashes with ``taken`` (registered names and earlier slugs). Never empty (``model``)."""
    last = folder_or_repo.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    # Dots are stripped from the ends too: "." or a hidden ".model" folder would give an id of dots.
    slug = re.sub(r"[^a-z0-9.]+", "-", last.lower()).strip("-.") or "model"
    candidate, n = slug, 1
    while candidate in taken:
        n += 1
        candidate = f"{slug}-{n}"
    return candidate


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (transformers' messages span several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def _read_json(path: Path, where: str) -> dict:
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserModelError(f"{where}: {path} is not valid JSON ({_one_line(exc)})") from exc
    if not isinstance(value, dict):
        raise UserModelError(f"{where}: {path} is not a JSON object")
    return value


def weight_files(folder: Path, where: str) -> list[Path]:
    """The weight files ``from_pretrained`` reads from ``folder``, found in its order: ``model.safetensors``,
    ``model.safetensors.index.json`` and its shards, ``pytorch_model.bin``, ``pytorch_model.bin.index.json``
    and its shards (an index comes first in the list). Raises :class:`UserModelError` when there are none or
    an index names a shard that is missing."""
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json"):
        if not (folder / name).is_file():
            continue
        if not name.endswith(".index.json"):
            return [folder / name]
        weight_map = _read_json(folder / name, where).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise UserModelError(f"{where}: weights do not load: {name}: it has no weight_map")
        shards = [folder / shard for shard in sorted(set(weight_map.values()))]
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise UserModelError(f"{where}: weights do not load: {name} names {', '.join(missing)}, "
                                 f"missing from {folder}")
        return [folder / name, *shards]
    raise UserModelError(f"{where}: no weights in {folder} (model.safetensors, sharded *.safetensors with "
                         "model.safetensors.index.json, pytorch_model.bin, or sharded *.bin with "
                         "pytorch_model.bin.index.json)")


def weight_shapes(files: list[Path], where: str) -> dict[str, tuple[int, ...]]:
    """``{tensor name: shape}`` over the weight files of :func:`weight_files` (an index is skipped), read
    without building a model (:mod:`compressors.builders.models.weights`: safetensors headers; pickle
    checkpoints through PyTorch's weights-only loader, never unpickled in full). A truncated or overwritten
    file, or a pickle that holds more than tensors (a payload that would run code), raises
    :class:`UserModelError` naming the file."""
    from compressors.builders.models.weights import WeightsUnreadable, tensor_shapes

    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        if path.name.endswith(".index.json"):
            continue
        try:
            shapes.update(tensor_shapes(path))
        except (WeightsUnreadable, ValueError) as exc:
            raise UserModelError(f"{where}: weights do not load: {path.name}: {exc}") from exc
    return shapes


def _check_tokenizer(folder: Path, where: str, trust_remote_code: bool) -> None:
    from transformers import AutoTokenizer

    what = f"{where}: missing tokenizer files ({TOKENIZER_FILES_HINT}) in {folder}"
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except Exception as exc:  # OSError, ValueError, TypeError...: it depends on the class and on what is missing
        raise UserModelError(f"{what}: {_one_line(exc)}") from exc
    # transformers 5 builds some tokenizers (BERT's) from no files at all, holding only their special
    # tokens: every word would become [UNK].
    specials = set(tokenizer.all_special_tokens)
    if len(tokenizer) <= len(specials):
        raise UserModelError(f"{what}: AutoTokenizer made a {type(tokenizer).__name__} with no vocabulary beyond "
                             f"its {len(specials)} special tokens")


def check_model_folder(folder: Path, where: str, trust_remote_code: bool = False) -> dict:
    """Check that ``folder`` holds a model the suite can build, cheaply (no weights loaded into a model).

    Args:
        folder: the model folder (a local folder or a hub snapshot).
        where: how the user named it, starting each error message (``"--models ./my-model"``).
        trust_remote_code: whether the model's own code (``auto_map``) may be run.

    Returns its ``config.json``. Raises :class:`UserModelError` with what is wrong.
    """
    if not folder.exists():
        raise UserModelError(f"{where}: no such folder {folder}")
    if not folder.is_dir():
        raise UserModelError(f"{where}: {folder} is not a folder (give the folder that holds config.json)")
    if not (folder / "config.json").is_file():
        raise UserModelError(f"{where}: no config.json in {folder} (a model folder as save_pretrained writes it)")
    config = _read_json(folder / "config.json", where)
    detect_task(config, where)
    if not trust_remote_code:
        for name in ("config.json", "tokenizer_config.json"):
            path = folder / name
            settings = config if name == "config.json" else (_read_json(path, where) if path.is_file() else {})
            if "auto_map" in settings:
                raise UserModelError(f"{where}: needs remote code (auto_map in {name}); pass --trust-remote-code "
                                     "if you trust it")
    weight_shapes(weight_files(folder, where), where)  # before the tokenizer: cheaper, and the likelier miss
    _check_tokenizer(folder, where, trust_remote_code)
    return config


def model_files(folder: Path, config: dict) -> list[Path]:
    """The files in ``folder`` that make the built model: config, weights, tokenizer and (for a model
    with its own code) its ``.py`` files. What the base artifact's cache key hashes."""
    patterns = _TOKENIZER_PATTERNS + (("*.py",) if "auto_map" in config else ())
    names = {p.name for p in folder.iterdir() if p.is_file()
             and (p.name in _CONFIG_FILES + _TOKENIZER_FILES or any(fnmatch.fnmatch(p.name, pt) for pt in patterns))}
    files = {folder / name for name in names} | set(weight_files(folder, str(folder)))
    return sorted(files)


def folder_recipe(folder: Path, spec: ModelSpec) -> dict:
    """What the base artifact of a model folder is keyed on: its files' content (not its path: the same
    folder moved or copied hits the same entry; an edited weight file does not), its task, the versions."""
    config = json.loads((folder / "config.json").read_text())
    digests = {path.name: sha256_file(path) for path in model_files(folder, config)}
    return {"files": digests, "task": spec.task, "versions": library_versions(*TORCH_LIBS)}


def local_folder(spec: ModelSpec) -> Path | None:
    """The folder of a model given by path (None for other models)."""
    build = spec.build_base
    return build.args[0] if isinstance(build, functools.partial) and build.func is _build_local else None


def _build_from_folder(folder: Path, spec: ModelSpec, ctx: BuildContext, meta: dict) -> Artifact:

    def build(out: Path) -> dict:
        import torch
        from transformers import AutoConfig, AutoTokenizer

        trust = spec.trust_remote_code
        model_config = AutoConfig.from_pretrained(folder, trust_remote_code=trust)
        # weights_only: a pickle checkpoint goes through PyTorch's restricted unpickler, as at collection
        # (transformers' default; said here so that a change of default cannot unpickle a user's file in full).
        model = _auto_class(spec.task).from_pretrained(folder, config=model_config, dtype=torch.float32,
                                                       trust_remote_code=trust, weights_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust)
        model.eval().save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        built = {**meta, "origin": spec.origin, "task": spec.task, "architecture": type(model).__name__}
        if spec.task == TASK_CLASSIFICATION:
            built["id2label"] = {str(k): v for k, v in model.config.id2label.items()}
        return built

    return ctx.cache.get_or_build(
        artifact_kind="hf-torch",
        name=spec.name,
        recipe=folder_recipe(folder, spec),
        build=build,
        weights=["model.safetensors"],
    )


def _folder_config(folder: Path, spec: ModelSpec) -> dict:
    # OSError / ValueError (a bad JSON) are what ModelSpec.encoder_layers expects from a missing config.
    return json.loads((folder / "config.json").read_text())


def _cached_hub_config(cache_dir: Path | None, spec: ModelSpec) -> dict | None:
    """The hub model's config.json if the HF cache at ``cache_dir`` holds it (never the network)."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(spec.repo_id, "config.json", cache_dir=cache_dir, revision=spec.revision)
    return json.loads(Path(path).read_text()) if isinstance(path, str) else None


def _check_local(folder: Path, spec: ModelSpec, ctx: BuildContext) -> None:
    check_model_folder(folder, f"--models {spec.origin}", spec.trust_remote_code)  # still as it was at collection


def _build_local(folder: Path, spec: ModelSpec, ctx: BuildContext) -> Artifact:
    return _build_from_folder(folder, spec, ctx, {"path": str(folder)})


def _hub_snapshot(spec: ModelSpec, ctx: BuildContext) -> Path:
    """The hub model's snapshot (cache, else download), checked like a folder."""
    snapshot = resolve_hub_snapshot(spec, ctx)
    config = check_model_folder(snapshot, f"--models {spec.origin}", spec.trust_remote_code)
    task = detect_task(config, f"--models {spec.origin}")
    if task != spec.task:
        raise ModelUnavailable(f"{spec.name}: {spec.repo_id} is a {task} model, which was not known when the run was "
                               "collected (it was not in the local Hugging Face cache); run again to benchmark it")
    return snapshot


def _check_hub(spec: ModelSpec, ctx: BuildContext) -> None:
    _hub_snapshot(spec, ctx)


def _build_hub(spec: ModelSpec, ctx: BuildContext) -> Artifact:
    snapshot = _hub_snapshot(spec, ctx)
    return _build_from_folder(snapshot, spec, ctx, {"repo_id": spec.repo_id, "commit": snapshot.name})


def user_model_spec(arg: str, *, trust_remote_code: bool = False, taken: set[str] = frozenset(),
                    ctx: BuildContext | None = None) -> ModelSpec:
    """The :class:`ModelSpec` of a folder or ``hub:org/name`` given to ``--models``, checked now.

    Args:
        arg: the ``--models`` entry as given (``./my-model``, ``/abs/path``, ``~/m``, ``hub:org/name``).
        trust_remote_code: let the model's own code run (``--trust-remote-code``).
        taken: names the spec's name must not clash with (registered names, earlier user models).
        ctx: where hub models are looked up (its HF cache and ``hf_local_only``); a default one if None.

    A folder is checked here (:func:`check_model_folder`) and raises :class:`UserModelError`; it is
    never looked up on the hub. A hub model is checked the same way when its snapshot can be had
    (the local HF cache, else a download); when it cannot, the spec is returned and its
    ``check_available`` raises :class:`ModelUnavailable` with why, so its configurations skip.
    """
    kind, value = parse_model_argument(arg)
    where = f"--models {arg}"
    if kind == "registered":
        raise UserModelError(f"{where}: not a folder (./name, /path) or hub id (hub:org/name)")
    common = dict(source=kind, origin=arg, trust_remote_code=trust_remote_code, user=True)
    if kind == "local":
        folder = Path(value).expanduser().resolve()
        config = check_model_folder(folder, where, trust_remote_code)
        return ModelSpec(
            name=model_slug(folder.name, taken), task=detect_task(config, where),
            description=f"{folder} ({config['architectures'][0]}, given on the command line)",
            build_base=functools.partial(_build_local, folder), check_available=functools.partial(_check_local, folder),
            architecture=functools.partial(_folder_config, folder), **common)

    ctx = ctx or BuildContext(progress=False)
    spec = ModelSpec(name=model_slug(value, taken), task=TASK_CLASSIFICATION, repo_id=value,
                     description=f"{value} (given on the command line)", build_base=_build_hub,
                     check_available=_check_hub, architecture=functools.partial(_cached_hub_config, ctx.hf_cache_dir),
                     **common)
    try:
        snapshot = resolve_hub_snapshot(spec, ctx)
    except ModelUnavailable:
        # Checked when it is built instead: check_available tries again and skips with the reason.
        # Its task is unknown unless its config alone is cached; classification stands in till then.
        config = _cached_hub_config(ctx.hf_cache_dir, spec) or {}
        if "architectures" not in config:
            return dataclasses.replace(spec, description=f"{value} (given on the command line; not in the local "
                                                         "Hugging Face cache, task unknown)")
        return dataclasses.replace(spec, task=detect_task(config, where), description=(
            f"{value} ({config['architectures'][0]}, given on the command line; not in the local Hugging Face cache)"))
    config = check_model_folder(snapshot, where, trust_remote_code)
    return dataclasses.replace(spec, task=detect_task(config, where), architecture=functools.partial(
        _folder_config, snapshot), description=f"{value} ({config['architectures'][0]}, given on the command line)")
