"""Knowledge distillation: ``distill-lN`` (``distill-l3``: a 3-layer student).

Teacher: the chain's parent, i.e. the model's fine-tuned fp32 classifier. Student: the
teacher with only N encoder layers kept, evenly spaced and always including the first
and the last (``round(i * (L - 1) / (N - 1))``: layers 0, 2 and 5 of MiniLM's 6 for N=3),
embeddings and head copied from the teacher. Trained with the suite's loop on
:data:`DISTILL_RECIPE` (SST-2 train outside the held-apart slice) with

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)

at temperature T = 2 and alpha = 0.5 (Hinton et al.; the T^2 keeps the soft-target
gradients on the scale of the hard ones). Teacher logits are computed once, before
training, for exactly the sentences the loop samples. The student is a plain Hugging Face
model of the same architecture with fewer layers, so later stages can compress it further.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from compressors.builders.context import BuildContext
from compressors.builders.techniques.base import TORCH_MODEL, ChainError, Technique, register_technique_family
from compressors.builders.training import FineTuneRecipe
from compressors.core.cache import Artifact
from compressors.core.config import Config, check_range
from compressors.core.task_kinds import TASK_CLASSIFICATION
from compressors.execution.hf import save_hf_model
from compressors.execution.nn import LAYER_STACK_MODEL_TYPES, drop_layers, layer_count
from compressors.execution.runtime import load_torch_module

DISTILL_RECIPE = FineTuneRecipe(n_sentences=32000, epochs=1, lr=1e-4, batch_size=32, max_length=64, seed=0)


@dataclasses.dataclass(frozen=True)
class DistillConfig(Config):
    """Distil the parent into a shallower student.

    Args:
        layers: encoder layers of the student.
        temperature: softmax temperature of the soft targets.
        alpha: weight of the soft-target (KL) loss; ``1 - alpha`` goes to cross-entropy.
        recipe: training sentences and schedule.
    """

    layers: int = 3
    temperature: float = 2.0
    alpha: float = 0.5
    recipe: FineTuneRecipe = DISTILL_RECIPE

    def validate(self) -> None:
        name = type(self).__name__
        check_range(name, "layers", self.layers, 1)
        check_range(name, "temperature", self.temperature, 0.1, 100.0)
        check_range(name, "alpha", self.alpha, 0.0, 1.0)


def student_layers(teacher_layers: int, n: int) -> list[int]:
    """N evenly spaced layer indices including the first and the last."""
    if not 1 <= n < teacher_layers:
        raise ValueError(f"a {n}-layer student of a {teacher_layers}-layer teacher: need 1 <= N < {teacher_layers}")
    if n == 1:
        return [teacher_layers - 1]
    return sorted({round(i * (teacher_layers - 1) / (n - 1)) for i in range(n)})


def distillation_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float):
    import torch.nn.functional as F

    soft = (
        F.kl_div(
            F.log_softmax(student_logits / temperature, dim=-1),
            F.softmax(teacher_logits / temperature, dim=-1),
            reduction="batchmean",
        )
        * temperature**2
    )
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def teacher_logits(teacher, tokenizer, sentences, max_length: int, batch_size: int = 64, pairs=None):
    """The teacher's logits for ``sentences`` (and their ``pairs``; batches padded to their longest, as
    evaluation does)."""
    import torch

    from compressors.quality.metrics import encode_sentences

    with torch.inference_mode():
        return torch.cat([teacher(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.float()
                          for enc in encode_sentences(tokenizer, sentences, batch_size, max_length, pairs)])


def _build_distill(parent: Artifact, out: Path, config: DistillConfig, ctx: BuildContext) -> dict:
    import copy

    from transformers import AutoTokenizer

    from compressors.builders.training import sample_indices, train_classifier

    teacher = load_torch_module(parent)
    tokenizer = AutoTokenizer.from_pretrained(parent.path)
    total = layer_count(teacher)
    keep = student_layers(total, config.layers)
    student = copy.deepcopy(teacher)
    drop_layers(student, [i for i in range(total) if i not in keep])

    rest, _held = ctx.require_data().held_apart()
    sampled = sample_indices(len(rest), config.recipe.n_sentences, config.recipe.seed)  # what the loop will sample
    soft = teacher_logits(teacher, tokenizer, [rest.sentences[i] for i in sampled], config.recipe.max_length,
                          pairs=None if rest.pairs is None else [rest.pairs[i] for i in sampled])
    row = {index: position for position, index in enumerate(sampled)}
    del teacher

    def loss_fn(logits, labels, batch_indices):
        targets = soft[[row[i] for i in batch_indices]]
        return distillation_loss(logits, targets, labels, config.temperature, config.alpha)

    report = train_classifier(
        student,
        tokenizer,
        rest,
        config.recipe,
        loss_fn=loss_fn,
        progress=ctx.progress,
        description=f"distil into {config.layers} layers {keep}",
    )
    save_hf_model(student, parent.path, out)  # the shrunk config
    return {
        "teacher_artifact": parent.key,
        "teacher_layers": total,
        "student_layers": keep,
        "temperature": config.temperature,
        "alpha": config.alpha,
        "training": report.to_dict(),
    }


def _distill_family(match) -> Technique:
    n = int(match.group(1))
    return Technique(
        name=match.group(0),
        summary=f"knowledge distillation (T=2, alpha=0.5) from the fine-tuned model into a {n}-layer student",
        config=DistillConfig(layers=n),
        consumes=TORCH_MODEL,
        produces=TORCH_MODEL,
        tasks=frozenset({TASK_CLASSIFICATION}),
        devices=frozenset({"cpu", "cuda"}),
        build=_build_distill,
        artifact_kind="hf-torch",
        weights=("model.safetensors",),
        trains=True,
        uses_data=True,
        model_types=LAYER_STACK_MODEL_TYPES,
        tolerance=None,
        layers_after=lambda layers: _student_layers(n, layers),
    )


def _student_layers(n: int, layers: int) -> int:
    if not 1 <= n < layers:
        raise ChainError(f"distill-l{n} needs a student smaller than its {layers}-layer teacher; "
                         f"valid: distill-l1 to distill-l{layers - 1}")
    return n


register_technique_family(r"distill-l([1-9]\d*)", "distill-l3", _distill_family, defaults=("distill-l3",))
