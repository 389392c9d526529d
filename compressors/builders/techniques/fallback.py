"""Float fallback for quantizers: ``<recipe>-fbN`` keeps the N most sensitive transformer layers float.

A quantizer's error is not spread evenly over depth: a few layers (often the first, or one whose
activations have outliers) cost most of the accuracy. ``<recipe>-fbN`` measures each layer's share
once and leaves the N layers that cost most in float, quantizing the rest with the recipe, the
mixed-precision fallback that accuracy-aware quantization tools apply (Intel Neural Compressor's and
NNCF's accuracy-aware loops revert the most sensitive operations to float one by one). N is in the
name; it runs from 0 (the recipe through this path) to the layer count L, checked against each model's
config at collection. Recipes: ``dynamic-int8``, ``onnx-int8-static``, ``openvino-int8`` (classifiers),
``dynamic-int8`` and ``torchao-int8-dyn`` (causal LMs). None is in the default matrix: they are
the knob an accuracy-aware search turns.

Sensitivity ("leave-one-in"): for each layer i, the recipe is built with only layer i quantized and
every other layer float, into a scratch folder, and scored against the float parent:

* classifiers: mean KL(softmax fp32 || softmax quantized) of the logits over the first
  :data:`SENSITIVITY_SENTENCES` sentences of the held-apart SST-2 train slice (never evaluation rows);
* causal LMs: the rise of the mean next-token NLL over :data:`LM_WINDOWS` windows of
  :data:`LM_WINDOW_TOKENS` tokens of the calibration text (WikiText-2 valid) that do not overlap the
  windows OpenVINO's weight compression calibrates on
  (:func:`compressors.builders.techniques.openvino.lm_calibration_spans`).

The scores are a cached ``sensitivity`` artifact (:data:`SENSITIVITY_FILE`) keyed on the parent artifact,
the recipe's name and config, the rows scored and the library versions, so every N of one model and recipe
shares one measurement. The N highest scores stay float (ties: the lower index first); the artifact's meta
records ``float_layers``, the ranking, the per-layer scores and the sensitivity artifact's key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from compressors.builders.context import BuildContext
from compressors.builders.techniques.base import ChainError, Technique, get_technique, register_technique_family

# the recipes' modules register them; imported by name so that each is registered before its -fbN family
from compressors.builders.techniques.onnx import OrtStaticQuantConfig  # noqa: F401, I001
from compressors.builders.techniques.openvino import NncfQuantizeConfig  # noqa: F401
from compressors.builders.techniques.quantization import DynamicInt8Config  # noqa: F401
from compressors.builders.techniques.torchao_quant import TorchaoConfig  # noqa: F401
from compressors.core.cache import Artifact, library_versions
from compressors.core.config import Config, ConfigError, check_range
from compressors.core.task_kinds import TASK_CAUSAL_LM, TASK_CLASSIFICATION

SENSITIVITY_FILE = "fallback_sensitivity.json"
SENSITIVITY_SENTENCES = 256
LM_WINDOWS, LM_WINDOW_TOKENS = 4, 256
SCORING_BATCH = 32


@dataclasses.dataclass(frozen=True)
class FloatFallbackConfig(Config):
    """Quantize with ``recipe``, keeping the ``fallback`` most sensitive transformer layers float.

    Args:
        recipe: the quantizer technique's registered name (``dynamic-int8``).
        quantizer: that technique's config (its ``float_layers`` empty: they are chosen when building).
        fallback: how many layers stay float (N of ``<recipe>-fbN``).
        sentences: held-apart train sentences a classifier's sensitivity is scored on.
        windows / window_tokens: calibration-text windows a causal LM's sensitivity is scored on.
    """

    recipe: str
    quantizer: Config
    fallback: int
    sentences: int = SENSITIVITY_SENTENCES
    windows: int = LM_WINDOWS
    window_tokens: int = LM_WINDOW_TOKENS

    def validate(self) -> None:
        name = type(self).__name__
        check_range(name, "fallback", self.fallback, 0)
        check_range(name, "sentences", self.sentences, 1)
        check_range(name, "windows", self.windows, 1)
        check_range(name, "window_tokens", self.window_tokens, 2)
        if getattr(self.quantizer, "float_layers", None) != ():
            raise ConfigError(f"{name}.quantizer must be a config with float_layers (empty: chosen when building); "
                              f"got {self.quantizer!r}")

    def for_machine(self, cpu) -> FloatFallbackConfig:
        return dataclasses.replace(self, quantizer=self.quantizer.for_machine(cpu))

    def to_dict(self) -> dict:
        return {**super().to_dict(), "quantizer": self.quantizer.to_dict()}  # with its type name


def check_fallback(recipe: str, n: int, layers: int) -> int:
    """``layers`` (a fallback removes none), or :class:`ChainError` naming the valid range when ``n > layers``."""
    if n > layers:
        raise ChainError(f"{recipe}-fb{n} keeps {n} layers float and the model has {layers}; "
                         f"valid: {recipe}-fb0 to {recipe}-fb{layers}")
    return layers


def most_sensitive(scores: list[float], n: int) -> list[int]:
    """The ``n`` layers with the highest scores (ties: the lower index first), in layer order."""
    return sorted(sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:n])


# ------------------------------------------------------------------------------------------- scoring rows

def lm_sensitivity_spans(tokens: int, count: int, length: int) -> list[tuple[int, int]]:
    """The first ``count`` back-to-back ``length``-token spans of a ``tokens``-token text that overlap none of
    the calibration windows (:func:`~compressors.builders.techniques.openvino.lm_calibration_spans`)."""
    from compressors.builders.techniques.openvino import lm_calibration_spans
    from compressors.quality.data import DataError

    taken = lm_calibration_spans(tokens)
    spans = []
    for start in range(0, tokens - length + 1, length):
        if all(start + length <= a or start >= b for a, b in taken):
            spans.append((start, start + length))
            if len(spans) == count:
                return spans
    raise DataError(f"the calibration text ({tokens} tokens) has {len(spans)} spans of {length} tokens clear of "
                    f"the {len(taken)} calibration windows; the float fallback's sensitivity needs {count}")


@dataclasses.dataclass(frozen=True)
class ScoringRows:
    """What the sensitivity is scored on: pre-tokenized batches (classifiers) or windows (causal LMs)."""

    causal: bool
    batches: tuple[dict, ...]
    describe: dict  # source, count, checksum: what the cache key and the artifact record


def scoring_rows(parent: Artifact, config: FloatFallbackConfig, ctx: BuildContext) -> ScoringRows:
    from transformers import AutoTokenizer

    from compressors.execution.hf import is_causal_lm_folder
    from compressors.quality.metrics import encode_sentences, eval_max_length

    tokenizer = AutoTokenizer.from_pretrained(parent.path)
    data = ctx.require_data()
    if is_causal_lm_folder(parent.path):
        corpus = data.train()
        ids = np.asarray(tokenizer(corpus.text, add_special_tokens=False)["input_ids"], np.int64)
        spans = lm_sensitivity_spans(len(ids), config.windows, config.window_tokens)
        batches = tuple({"input_ids": ids[a:b][None]} for a, b in spans)
        digest = hashlib.sha256(corpus.checksum.encode())
        for batch in batches:
            digest.update(batch["input_ids"].tobytes())
        return ScoringRows(True, batches, {"source": corpus.source, "windows": [list(s) for s in spans],
                                           "checksum": digest.hexdigest(), "text_checksum": corpus.checksum})
    _rest, held = data.held_apart()
    n = min(config.sentences, len(held))
    model_config = json.loads((parent.path / "config.json").read_text())
    batches = tuple(encode_sentences(tokenizer, held.sentences[:n], batch_size=SCORING_BATCH,
                                     max_length=eval_max_length(tokenizer, model_config),
                                     pairs=None if held.pairs is None else held.pairs[:n]))
    return ScoringRows(False, batches, {"source": held.source, "sentences": n, "held_apart_checksum": held.checksum})


def _outputs(predictor, rows: ScoringRows) -> list[np.ndarray]:
    return [predictor.logits(predictor.prepare(batch)).astype(np.float64) for batch in rows.batches]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def score(reference: list[np.ndarray], quantized: list[np.ndarray], rows: ScoringRows) -> float:
    """Classifiers: mean KL(softmax reference || softmax quantized) per row; causal LMs: the rise of the mean
    next-token NLL (nats per token) from ``reference`` to ``quantized``."""
    from compressors.quality.metrics import sequence_nll

    if rows.causal:
        def mean_nll(outputs):
            pairs = [sequence_nll(out[0], batch["input_ids"][0]) for out, batch in zip(outputs, rows.batches,
                                                                                        strict=True)]
            return sum(p[0] for p in pairs) / sum(p[1] for p in pairs)

        return mean_nll(quantized) - mean_nll(reference)
    p_log = np.concatenate([_log_softmax(r) for r in reference])
    q_log = np.concatenate([_log_softmax(q) for q in quantized])
    return float((np.exp(p_log) * (p_log - q_log)).sum(axis=-1).mean())


# ------------------------------------------------------------------------------------------- sensitivity

def sensitivity_artifact(parent: Artifact, config: FloatFallbackConfig, ctx: BuildContext) -> Artifact:
    """The cached leave-one-in scores of ``config.recipe`` on ``parent`` (see the module docstring)."""
    from compressors.core.scratch import scratch_dir
    from compressors.execution.nn import folder_layer_prefixes
    from compressors.execution.runtime import load_predictor

    recipe = get_technique(config.recipe)
    rows = scoring_rows(parent, config, ctx)
    layers = len(folder_layer_prefixes(parent.path))

    def build(out: Path) -> dict:
        started = time.perf_counter()
        reference = _outputs(load_predictor(parent, "cpu"), rows)
        entries = []
        for i in range(layers):
            quantizer = dataclasses.replace(config.quantizer, float_layers=tuple(j for j in range(layers) if j != i))
            layer_started = time.perf_counter()
            with scratch_dir("fallback") as scratch:
                folder = Path(scratch)
                meta = recipe.build(parent, folder, quantizer, ctx) or {}
                built = Artifact(folder, {"key": f"leave-one-in-{i}", "artifact_kind": recipe.artifact_kind,
                                          "meta": meta})
                predictor = load_predictor(built, "cpu")
                entries.append({"layer": i, "score": score(reference, _outputs(predictor, rows), rows),
                                "seconds": round(time.perf_counter() - layer_started, 2)})
                del predictor
        scores = [e["score"] for e in entries]
        ranking = sorted(range(layers), key=lambda i: (-scores[i], i))
        curve = {"model_artifact": parent.key, "recipe": recipe.name, "metric": _metric(rows),
                 "method": "leave-one-in: only that layer quantized, every other layer float",
                 "layers": entries, "ranking": ranking, "data": rows.describe,
                 "seconds": round(time.perf_counter() - started, 2)}
        (out / SENSITIVITY_FILE).write_text(json.dumps(curve, indent=2) + "\n")
        return {"recipe": recipe.name, "metric": curve["metric"], "scores": scores, "ranking": ranking,
                "seconds": curve["seconds"]}

    return ctx.cache.get_or_build(
        artifact_kind="sensitivity",
        name=f"{parent.path.name}-{recipe.name}-fallback-sensitivity",
        recipe={
            "parent": parent.key,
            "recipe": recipe.name,
            "config": config.quantizer.to_dict(),
            "metric": _metric(rows),
            "rows": rows.describe,
            "versions": library_versions(*recipe.version_packages),
        },
        build=build,
        weights=[SENSITIVITY_FILE],
    )


def _metric(rows: ScoringRows) -> str:
    return "nll_rise" if rows.causal else "kl_fp32_to_quantized"


def _build_fallback(parent: Artifact, out: Path, config: FloatFallbackConfig, ctx: BuildContext) -> dict:
    from compressors.execution.nn import folder_layer_prefixes

    recipe = get_technique(config.recipe)
    check_fallback(recipe.name, config.fallback, len(folder_layer_prefixes(parent.path)))  # a model not checked
    sensitivity = sensitivity_artifact(parent, config, ctx)
    curve = json.loads(sensitivity.file(SENSITIVITY_FILE).read_text())
    scores = [entry["score"] for entry in curve["layers"]]
    float_layers = most_sensitive(scores, config.fallback)
    meta = recipe.build(parent, out, dataclasses.replace(config.quantizer, float_layers=tuple(float_layers)), ctx)
    return {**(meta or {}), "float_layers": float_layers, "sensitivity_artifact": sensitivity.key,
            "sensitivity_metric": curve["metric"], "sensitivity_ranking": curve["ranking"],
            "layer_scores": scores}


# ------------------------------------------------------------------------------------------- registry

def _fallback_family(recipe_name: str, tasks: frozenset[str]):
    def factory(match) -> Technique:
        n = int(match.group(1))
        recipe = get_technique(recipe_name)
        return dataclasses.replace(
            recipe, name=match.group(0), tasks=tasks, default_for=frozenset(), build=_build_fallback,
            config=FloatFallbackConfig(recipe_name, recipe.config, n),
            uses_data=True,  # the sensitivity reads held-apart train rows (and the recipe may calibrate)
            budget_from=recipe_name,  # one budget per N would be a table per name: the recipe's quality limits
            layers_after=lambda layers: check_fallback(recipe_name, n, layers),
            summary=f"{recipe_name} with the {n} most sensitive transformer layers kept float (leave-one-in "
                    "sensitivity on held-apart train rows)")
    return factory


for _recipe, _tasks in (("dynamic-int8", {TASK_CLASSIFICATION, TASK_CAUSAL_LM}),
                        ("onnx-int8-static", {TASK_CLASSIFICATION}),
                        ("openvino-int8", {TASK_CLASSIFICATION}),
                        ("torchao-int8-dyn", {TASK_CAUSAL_LM})):
    register_technique_family(rf"{_recipe}-fb(0|[1-9]\d*)", f"{_recipe}-fb1", _fallback_family(_recipe,
                                                                                                frozenset(_tasks)))
