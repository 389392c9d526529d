"""The suite's one training loop: supervised fine-tuning of a sequence classifier.

Every technique that trains (the embedded model's fine-tune, re-finetunes after
pruning, LoRA, distillation) goes through :func:`train_classifier`, so they share
sentence sampling, length bucketing, the optimiser schedule and the progress bar.
Callers cache what it produces; it never runs inside a timed region.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable

from compressors.core.config import Config, check_range
from compressors.machine.process_memory import reset_peak_rss, status_bytes
from compressors.quality.data import HELD_APART_SENTENCES, TextClassificationSplit


@dataclasses.dataclass(frozen=True)
class FineTuneRecipe(Config):
    """How to fine-tune a classifier on SST-2 train.

    Args:
        n_sentences: size of the seeded random sample of the train split used.
        epochs: passes over that sample.
        lr: peak AdamW learning rate, reached after ``warmup_ratio`` of the steps
            and decayed linearly to zero.
        batch_size: sentences per optimiser step.
        max_length: tokens per sentence after truncation (SST-2 sentences are
            short: 64 covers all but a handful).
        bucket_batches: sort each window of this many batches by length before
            batching, so batches hold similar lengths and waste little on padding
            (1 = plain shuffled batches).
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm).
        seed: seeds the sample, the shuffling, dropout and the head's initialisation.
    """

    n_sentences: int = 16000
    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 32
    max_length: int = 64
    warmup_ratio: float = 0.06
    bucket_batches: int = 50
    weight_decay: float = 0.01
    seed: int = 0

    def validate(self) -> None:
        name = type(self).__name__
        check_range(name, "n_sentences", self.n_sentences, 1)
        check_range(name, "epochs", self.epochs, 1)
        check_range(name, "lr", self.lr, 0.0)
        check_range(name, "batch_size", self.batch_size, 1)
        check_range(name, "max_length", self.max_length, 8, 512)
        check_range(name, "warmup_ratio", self.warmup_ratio, 0.0, 1.0)
        check_range(name, "bucket_batches", self.bucket_batches, 1)


def sample_indices(n_total: int, n: int, seed: int) -> list[int]:
    """A seeded sample of ``min(n, n_total)`` distinct indices."""
    rng = random.Random(seed)
    indices = list(range(n_total))
    rng.shuffle(indices)
    return indices[: min(n, n_total)]


def length_bucketed_batches(
    lengths: list[int], batch_size: int, bucket_batches: int, rng: random.Random
) -> list[list[int]]:
    """Shuffled batches of positions into ``lengths``, each of similar lengths.

    Positions are shuffled, cut into windows of ``batch_size * bucket_batches``,
    each window sorted by length and cut into batches, and the batches shuffled:
    the usual bucketing trade-off of randomness for less padding.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


@dataclasses.dataclass
class TrainingReport:
    """What a training run cost and saw; stored in the artifact's manifest."""

    wall_seconds: float
    steps: int
    sentences: int
    epochs: int
    final_loss: float
    trainable_parameters: int
    total_parameters: int
    peak_rss_bytes: int | None = None
    peak_vram_bytes: int | None = None
    optimizer: str = "AdamW"

    @property
    def trainable_share(self) -> float:
        return self.trainable_parameters / self.total_parameters if self.total_parameters else 0.0

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "trainable_share": round(self.trainable_share, 6)}


def _logical_numel(param) -> int:
    """Weights a parameter stands for: a bitsandbytes 4-bit parameter packs two per byte
    (its ``quant_state.shape`` is the unpacked shape)."""
    state = getattr(param, "quant_state", None)
    shape = getattr(state, "shape", None)
    if shape is not None:
        count = 1
        for dim in shape:
            count *= int(dim)
        return count
    return param.numel()


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts (4-bit packed weights counted unpacked)."""
    trainable = sum(_logical_numel(p) for p in model.parameters() if p.requires_grad)
    total = sum(_logical_numel(p) for p in model.parameters())
    return trainable, total


FUSED_ADAMW_DEVICES = ("cpu", "cuda")  # PyTorch >= 2.4 has fused AdamW kernels for both


def adamw(groups: list[dict], lr: float):
    """AdamW over ``groups``, in PyTorch's fused implementation where it has one for these parameters
    (float tensors on the CPU or a CUDA GPU): the same update in one pass over each tensor instead of
    a dozen; a MiniLM-L6 fine-tune step takes 0.81x as long as with the for-loop AdamW on 2 cores
    (docs/decisions/minilm-finetune-recipe.md). Results differ from the for-loop
    implementation by rounding only (tests/test_training.py), as they do between CPU kinds, so
    cached artifacts stay valid. Returns ``(optimizer, description)``."""
    import torch

    params = [p for group in groups for p in group["params"]]
    devices = sorted({p.device.type for p in params})
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in params if not p.is_floating_point()})
    if dtypes or any(d not in FUSED_ADAMW_DEVICES for d in devices) or len(devices) > 1:
        why = f"non-float parameters ({', '.join(dtypes)})" if dtypes else f"parameters on {', '.join(devices)}"
        return torch.optim.AdamW(groups, lr=lr), f"AdamW (for-loop: no fused kernel for {why})"
    return torch.optim.AdamW(groups, lr=lr, fused=True), "AdamW (fused)"


def train_classifier(
    model,
    tokenizer,
    train: TextClassificationSplit,
    recipe: FineTuneRecipe,
    *,
    loss_fn: Callable | None = None,
    progress: bool = True,
    description: str = "fine-tune",
) -> TrainingReport:
    """Fine-tune ``model`` in place on a sample of ``train``.

    Args:
        model: a Hugging Face sequence classifier (returns ``.logits``).
        tokenizer: its tokenizer.
        train: the SST-2 train split (never dev).
        recipe: sample size, schedule and batching.
        loss_fn: ``loss_fn(logits, labels, batch_indices)``; defaults to
            cross-entropy against the labels (distillation passes its own).
        progress: show a tqdm progress bar.
    """
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(recipe.seed)
    rng = random.Random(recipe.seed)
    indices = sample_indices(len(train), recipe.n_sentences, recipe.seed)
    sentences = [train.sentences[i] for i in indices]
    labels = torch.tensor([train.labels[i] for i in indices])
    pairs = None if train.pairs is None else [train.pairs[i] for i in indices]  # true pair encoding (NLI)
    encoded = tokenizer(sentences, pairs, truncation=True, max_length=recipe.max_length)
    lengths = [len(ids) for ids in encoded["input_ids"]]

    params = [p for p in model.parameters() if p.requires_grad]
    no_decay = [
        p
        for n, p in model.named_parameters()
        if p.requires_grad and (n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n)
    ]
    no_decay_ids = {id(p) for p in no_decay}
    groups = [
        {"params": [p for p in params if id(p) not in no_decay_ids], "weight_decay": recipe.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    optimizer, optimizer_name = adamw(groups, recipe.lr)
    steps_per_epoch = math.ceil(len(indices) / recipe.batch_size)
    total_steps = steps_per_epoch * recipe.epochs
    warmup = int(recipe.warmup_ratio * total_steps)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    loss_fn = loss_fn or (lambda logits, y, _idx: torch.nn.functional.cross_entropy(logits, y))

    hwm_reset = reset_peak_rss()  # peak RSS *while training*, not of whatever ran before
    on_cuda = any(p.is_cuda for p in model.parameters())
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    model.train()
    start = time.perf_counter()
    running = float("nan")
    bar = tqdm(total=total_steps, desc=description, unit="step", disable=not progress, mininterval=2.0)
    try:
        for _epoch in range(recipe.epochs):
            for batch in length_bucketed_batches(lengths, recipe.batch_size, recipe.bucket_batches, rng):
                features = tokenizer.pad({k: [encoded[k][i] for i in batch] for k in encoded}, return_tensors="pt")
                logits = model(**features).logits
                loss = loss_fn(logits, labels[batch], [indices[i] for i in batch])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                running = loss.item() if math.isnan(running) else 0.98 * running + 0.02 * loss.item()
                bar.set_postfix(loss=f"{running:.3f}", refresh=False)
                bar.update(1)
    finally:
        bar.close()
        model.eval()
    trainable, total = count_parameters(model)
    return TrainingReport(
        wall_seconds=time.perf_counter() - start,
        steps=total_steps,
        sentences=len(indices),
        epochs=recipe.epochs,
        final_loss=running,
        trainable_parameters=trainable,
        total_parameters=total,
        peak_rss_bytes=status_bytes("VmHWM") if hwm_reset else None,
        peak_vram_bytes=int(torch.cuda.max_memory_allocated()) if on_cuda else None,
        optimizer=optimizer_name,
    )


# Re-finetune after compressing (layer dropping, low-rank factorization): 16,000 train sentences (of
# the 66,349 outside the held-apart slice), one epoch, the first fine-tune's peak LR. Chosen on the
# held-apart slice; see docs/decisions/refinetune-recipe.md.
REFINETUNE_RECIPE = FineTuneRecipe(n_sentences=16000, epochs=1, lr=8e-5, batch_size=32, max_length=64, seed=1)


def refinetune(
    model, tokenizer, recipe: FineTuneRecipe, ctx, description: str, held_apart: int = HELD_APART_SENTENCES
) -> dict:
    """Re-finetune a compressed model in place on SST-2 train minus the held-apart slice (``ctx``: a
    :class:`~compressors.builders.context.BuildContext`); returns the training report."""
    rest, _held = ctx.require_data().held_apart(held_apart)
    return train_classifier(model, tokenizer, rest, recipe, progress=ctx.progress, description=description).to_dict()
