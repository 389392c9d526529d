"""Layer sensitivity analysis and layer dropping: ``layerdrop-K`` and ``layerdrop-K-noft``.

Sensitivity: remove each encoder layer in turn and measure the accuracy drop on a
held-apart slice of SST-2 *train* (:func:`compressors.quality.data.split_held_apart`, 1,000
sentences the embedded model's fine-tune never saw), never on dev. The curve is a cached
``sensitivity`` artifact (``sensitivity.json``: layer index -> accuracy and drop) that
reports can plot; it is keyed on the model's artifact, so every ``layerdrop-K`` of one
model shares it.

``layerdrop-K`` physically removes the K layers whose removal hurt least (ties: the
later layer first), renumbers the rest and shrinks the config (``num_hidden_layers``),
so the saved model is a smaller model of the same architecture, then re-finetunes it
briefly with the suite's training loop on train minus the held-apart slice
(:data:`compressors.builders.training.REFINETUNE_RECIPE`; see docs/decisions/refinetune-recipe.md).
``layerdrop-K-noft`` skips the re-finetune, to show what it recovers. K is in the name
(``layerdrop-3``); ``layerdrop-K`` with K >= the layer count is rejected when the model is built.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from compressors.builders.context import BuildContext
from compressors.builders.techniques.base import TORCH_MODEL, ChainError, Technique, register_technique_family
from compressors.builders.training import REFINETUNE_RECIPE, FineTuneRecipe, refinetune
from compressors.core.cache import Artifact, library_versions
from compressors.core.config import Config, check_range
from compressors.core.task_kinds import TASK_CLASSIFICATION
from compressors.execution.hf import save_hf_model
from compressors.execution.nn import LAYER_STACK_MODEL_TYPES, drop_layers, layer_count
from compressors.execution.runtime import load_torch_module
from compressors.quality.data import HELD_APART_SENTENCES

SENSITIVITY_FILE = "sensitivity.json"

@dataclasses.dataclass(frozen=True)
class LayerDropConfig(Config):
    """Drop the ``drop`` least sensitive encoder layers, then optionally re-finetune.

    Args:
        drop: number of encoder layers removed.
        recipe: the re-finetune's sentence budget and schedule (None: no re-finetune).
        held_apart: size of the SST-2 train slice the sensitivity is measured on.
    """

    drop: int = 2
    recipe: FineTuneRecipe | None = REFINETUNE_RECIPE
    held_apart: int = HELD_APART_SENTENCES

    @property
    def refinetune(self) -> bool:
        return self.recipe is not None

    def validate(self) -> None:
        check_range(type(self).__name__, "drop", self.drop, 1)
        check_range(type(self).__name__, "held_apart", self.held_apart, 10)


def _accuracy_on(model, tokenizer, split) -> float:
    from compressors.execution.runtime import TorchPredictor
    from compressors.quality.metrics import accuracy, make_eval_set

    return accuracy(TorchPredictor(model), make_eval_set(tokenizer, split))


def layer_sensitivity(model, tokenizer, split, progress: bool = False) -> dict:
    """Accuracy on ``split`` with each encoder layer removed in turn (``model`` is left unchanged)."""
    import copy

    from tqdm.auto import tqdm

    baseline = _accuracy_on(model, tokenizer, split)
    layers = []
    for index in tqdm(range(layer_count(model)), desc="layer sensitivity", disable=not progress):
        trimmed = copy.deepcopy(model)
        drop_layers(trimmed, [index])
        acc = _accuracy_on(trimmed, tokenizer, split)
        layers.append({"layer": index, "accuracy_pct": round(acc, 3), "drop_pp": round(baseline - acc, 3)})
    return {"baseline_accuracy_pct": round(baseline, 3), "layers": layers}


def least_sensitive(curve: dict, k: int) -> list[int]:
    """The ``k`` layers whose removal cost least (ties: the later layer, closer to the head, first)."""
    ranked = sorted(curve["layers"], key=lambda entry: (entry["drop_pp"], -entry["layer"]))
    return sorted(entry["layer"] for entry in ranked[:k])


def sensitivity_artifact(parent: Artifact, ctx: BuildContext, held_apart: int, label: str) -> Artifact:
    """The cached sensitivity curve of ``parent``'s model."""
    _rest, held = ctx.require_data().held_apart(held_apart)

    def build(out: Path) -> dict:
        from transformers import AutoTokenizer

        model = load_torch_module(parent)
        tokenizer = AutoTokenizer.from_pretrained(parent.path)
        curve = layer_sensitivity(model, tokenizer, held, progress=ctx.progress)
        curve.update(
            {
                "model_artifact": parent.key,
                "metric": "accuracy_pct",
                "data": {"source": held.source, "sentences": len(held), "checksum": held.checksum},
            }
        )
        (out / SENSITIVITY_FILE).write_text(json.dumps(curve, indent=2) + "\n")
        return {
            "baseline_accuracy_pct": curve["baseline_accuracy_pct"],
            "drop_pp_by_layer": [entry["drop_pp"] for entry in curve["layers"]],
        }

    return ctx.cache.get_or_build(
        artifact_kind="sensitivity",
        name=f"{label}-sensitivity",
        recipe={
            "parent": parent.key,
            "held_apart": held.checksum,
            "versions": library_versions("torch", "transformers"),
        },
        build=build,
        weights=[SENSITIVITY_FILE],
    )


def _build_layerdrop(parent: Artifact, out: Path, config: LayerDropConfig, ctx: BuildContext) -> dict:
    from transformers import AutoTokenizer


    curve_artifact = sensitivity_artifact(parent, ctx, config.held_apart, parent.path.name)
    curve = json.loads(curve_artifact.file(SENSITIVITY_FILE).read_text())
    model = load_torch_module(parent)
    before = layer_count(model)
    if config.drop >= before:
        raise ValueError(
            f"layerdrop-{config.drop}: the model has only {before} encoder layers (at least one must stay)"
        )
    dropped = least_sensitive(curve, config.drop)
    drop_layers(model, dropped)
    tokenizer = AutoTokenizer.from_pretrained(parent.path)
    meta = {
        "layers_before": before,
        "layers_after": layer_count(model),
        "dropped_layers": dropped,
        "sensitivity_artifact": curve_artifact.key,
        "sensitivity": curve["layers"],
    }
    if config.recipe is not None:
        meta["training"] = refinetune(
            model, tokenizer, config.recipe, ctx, f"re-finetune after dropping layers {dropped}", config.held_apart
        )
    save_hf_model(model, parent.path, out)  # writes the shrunk config
    return meta


def _layerdrop_family(match) -> Technique:
    k, noft = int(match.group(1)), bool(match.group(2))
    return Technique(
        name=match.group(0),
        summary=f"drop the {k} least sensitive encoder layers (sensitivity on held-apart SST-2 train)"
        + ("" if noft else ", then re-finetune briefly"),
        config=LayerDropConfig(drop=k, recipe=None if noft else REFINETUNE_RECIPE),
        consumes=TORCH_MODEL,
        produces=TORCH_MODEL,
        tasks=frozenset({TASK_CLASSIFICATION}),
        devices=frozenset({"cpu", "cuda"}),
        build=_build_layerdrop,
        artifact_kind="hf-torch",
        weights=("model.safetensors",),
        trains=not noft,
        uses_data=True,  # the sensitivity curve, and the re-finetune
        model_types=LAYER_STACK_MODEL_TYPES,
        tolerance=None,
        layers_after=lambda n: _layers_after_drop(k, n),
    )


def _layers_after_drop(k: int, layers: int) -> int:
    if k >= layers:
        raise ChainError(f"layerdrop-{k} would remove {k} of {layers} encoder layers; "
                         f"valid: layerdrop-1 to layerdrop-{layers - 1}")
    return layers - k


register_technique_family(
    r"layerdrop-([1-9]\d*)(-noft)?", "layerdrop-2", _layerdrop_family, defaults=("layerdrop-2", "layerdrop-2-noft")
)
