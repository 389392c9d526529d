"""Low-rank factorization: ``lowrank-R`` keeping R% of the rank, 1 <= R <= 99, and ``lowrank-R-ft``
(``lowrank-50``, ``lowrank-25`` and their ``-ft`` variants by default).

Each encoder ``nn.Linear`` W (out x in) is replaced by its truncated SVD,
W ~ (U_r S_r^1/2)(S_r^1/2 V_r^T), as two linears in sequence: ``in -> r`` (no bias)
then ``r -> out`` (W's bias).

Rank rule: r = ceil(keep * min(out, in)), ``keep`` = R / 100 of the full rank.
A matrix is factorized only if that saves parameters, r * (out + in) < out * in: for
the 384x384 attention matrices of MiniLM at 50% (r = 192, 147,456 parameters either
way) it does not, so ``lowrank-50`` there factorizes the feed-forward matrices only,
and ``lowrank-25`` (r = 96) all of them (see docs/decisions/lowrank-rank-rule.md).
The head and embeddings stay as they are.
``-ft`` re-finetunes the factorized model briefly with the suite's training loop
(:data:`compressors.builders.training.REFINETUNE_RECIPE`).

The artifact is a ``safetensors`` state dict plus the rank of every factorized module
(in the manifest); loading rebuilds the architecture from its config, swaps in the
factorized modules at those ranks and loads the weights, so nothing is pickled. The
result runs in PyTorch and is not chained further (its modules are not a Hugging Face
architecture that later stages could reload).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from compressors.builders.context import BuildContext
from compressors.builders.techniques.base import (
    TORCH_FINAL,
    TORCH_MODEL,
    Technique,
    name_knob,
    register_technique_family,
)
from compressors.builders.training import REFINETUNE_RECIPE, FineTuneRecipe, refinetune
from compressors.core.cache import Artifact
from compressors.core.config import Config, check_range
from compressors.core.task_kinds import TASK_CLASSIFICATION
from compressors.execution.hf import copy_side_files
from compressors.execution.loaders.lowrank import LOWRANK_WEIGHTS, factorized_linear
from compressors.execution.nn import replace_module, select_linears
from compressors.execution.runtime import load_torch_module


@dataclasses.dataclass(frozen=True)
class LowRankConfig(Config):
    """Truncated-SVD factorization of encoder linears.

    Args:
        keep: fraction of each matrix's full rank kept.
        only_if_smaller: skip matrices whose factorized form would not be smaller.
        recipe: re-finetune after factorizing with it (None: no re-finetune).
    """

    keep: float = 0.5
    only_if_smaller: bool = True
    recipe: FineTuneRecipe | None = None

    @property
    def refinetune(self) -> bool:
        return self.recipe is not None

    def validate(self) -> None:
        check_range(type(self).__name__, "keep", self.keep, 0.01, 1.0)


def rank_for(shape: tuple[int, int], keep: float) -> int:
    return max(1, math.ceil(keep * min(shape)))


def svd_factors(weight, rank: int):
    """``(first, second)`` with ``second @ first`` the best rank-``rank`` approximation of ``weight``."""
    import torch

    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (root[:, None] * vh[:rank]).to(weight.dtype), (u[:, :rank] * root).to(weight.dtype)


def plan_ranks(model, config: LowRankConfig) -> dict[str, int]:
    """Module name -> rank, for every encoder linear that gets factorized."""
    plan = {}
    for name in select_linears(model):
        out_features, in_features = model.get_submodule(name).weight.shape
        rank = rank_for((out_features, in_features), config.keep)
        if not config.only_if_smaller or rank * (out_features + in_features) < out_features * in_features:
            plan[name] = rank
    return plan


def factorize(model, ranks: dict[str, int]) -> None:
    """Replace each named linear by its rank-``r`` SVD factors, in place."""
    import torch

    for name, rank in ranks.items():
        linear = model.get_submodule(name)
        first, second = svd_factors(linear.weight, rank)
        new = factorized_linear(linear.in_features, linear.out_features, rank, linear.bias is not None)
        with torch.no_grad():
            new[0].weight.copy_(first)
            new[1].weight.copy_(second)
            if linear.bias is not None:
                new[1].bias.copy_(linear.bias)
        replace_module(model, name, new)


def _build_lowrank(parent: Artifact, out: Path, config: LowRankConfig, ctx: BuildContext) -> dict:
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from compressors.builders.training import count_parameters

    model = load_torch_module(parent)
    _, params_before = count_parameters(model)
    ranks = plan_ranks(model, config)
    factorize(model, ranks)
    _, params_after = count_parameters(model)
    meta = {
        "ranks": ranks,
        "rank_rule": f"ceil({config.keep} * min(out, in)), only where smaller: {config.only_if_smaller}",
        "parameters_before": params_before,
        "parameters_after": params_after,
    }
    if config.recipe is not None:
        meta["training"] = refinetune(
            model,
            AutoTokenizer.from_pretrained(parent.path),
            config.recipe,
            ctx,
            f"re-finetune lowrank-{round(config.keep * 100)}",
        )
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / LOWRANK_WEIGHTS))
    copy_side_files(parent.path, out)
    return meta


_LOWRANK = dict(
    consumes=TORCH_MODEL,
    produces=TORCH_FINAL,
    tasks=frozenset({TASK_CLASSIFICATION}),
    devices=frozenset({"cpu", "cuda"}),
    build=_build_lowrank,
    artifact_kind="torch-lowrank",
    weights=(LOWRANK_WEIGHTS,),
    version_packages=("torch", "transformers", "safetensors"),
    tolerance=None,
)

LOWRANK_KEEP_PERCENT = (1, 99)


def _lowrank_family(match) -> Technique:
    low, high = LOWRANK_KEEP_PERCENT
    suffix = match.group(2) or ""
    percent = name_knob(match.group(0), match.group(1), "kept rank percent", low, high,
                        f"lowrank-{low}{suffix} to lowrank-{high}{suffix}")
    ft = bool(suffix)
    return Technique(
        **_LOWRANK,
        name=match.group(0),
        trains=ft,
        uses_data=ft,  # the re-finetune
        config=LowRankConfig(keep=percent / 100, recipe=REFINETUNE_RECIPE if ft else None),
        summary=f"truncated SVD of encoder nn.Linear keeping {percent}% of the rank"
        + (", then re-finetune briefly" if ft else ""),
    )


register_technique_family(r"lowrank-(\d+)(-ft)?", "lowrank-50", _lowrank_family,
                          defaults=("lowrank-50", "lowrank-50-ft", "lowrank-25", "lowrank-25-ft"), listed_in_place=True)
