"""L1 unstructured pruning: ``l1-P`` at P% sparsity, 5 <= P <= 95 (``l1-30``, ``l1-40``, ``l1-50`` by default).

``torch.nn.utils.prune`` L1 (magnitude) pruning zeroes the given fraction of the weights
of the encoder layers' ``nn.Linear`` modules (attention projections, attention output,
feed-forward), by default with one global magnitude threshold across them
(``prune.global_unstructured``), so layers with many small weights give up more. The
pooler, the task head and the embeddings are not pruned (``include_head`` prunes pooler
and head too). ``prune.remove`` then makes it permanent: the model keeps plain ``weight``
parameters, no ``weight_orig``/``weight_mask`` and no forward pre-hooks (a seed kept the
masks, doubling weight memory and slowing inference).

The scope (global, pooler and head not pruned) was chosen on the held-apart SST-2 train slice,
never dev; see docs/decisions/l1-pruning-scope.md.

What is shipped and counted as size is the sparse storage form (:func:`save_sparse`):
each pruned weight as a bitmask + its nonzero values or as CSR, whichever is smaller,
every other tensor dense. Loading densifies it, so inference runs PyTorch's dense
kernels: no kernel exploits the zeros (``artifact_meta.sparse_kernel`` says so), hence
pruning alone changes size, not speed. The dense size is recorded beside it.

``l1-50-csr`` runs the same pruned weights with the one CPU sparse kernel in this stack:
each pruned linear keeps its weight as a CSR tensor and multiplies with
``torch.sparse.mm`` (MKL). At 50% sparsity that is slower than dense, which the variant
measures end to end (see docs/decisions/l1-sparse-kernel.md).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from compressors.builders.context import BuildContext
from compressors.builders.techniques.base import (
    TORCH_FINAL,
    TORCH_MODEL,
    Technique,
    name_knob,
    register_technique_family,
    register_variants,
)
from compressors.core.cache import Artifact
from compressors.core.config import Config, check_choice, check_range
from compressors.core.scratch import scratch_dir
from compressors.core.task_kinds import TASK_CAUSAL_LM, TASK_CLASSIFICATION
from compressors.execution.hf import copy_side_files
from compressors.execution.loaders.sparse import FORMAT_KEY, SPARSE_WEIGHTS
from compressors.execution.nn import select_linears
from compressors.execution.runtime import load_torch_module


@dataclasses.dataclass(frozen=True)
class L1PruneConfig(Config):
    """Unstructured L1 (magnitude) pruning of linear weights.

    Args:
        amount: fraction of the pruned weights set to zero.
        scope: ``global`` (one magnitude threshold over every pruned matrix) or
            ``per-layer`` (``amount`` of each matrix).
        include_head: prune the pooler and the task head too (off: the 384x2 classifier
            is 3 KB and every one of its weights decides the output).
        kernel: ``dense`` (densify at load) or ``csr`` (``torch.sparse.mm`` on CPU).
    """

    amount: float = 0.5
    scope: str = "global"
    include_head: bool = False
    kernel: str = "dense"

    def validate(self) -> None:
        check_range(type(self).__name__, "amount", self.amount, 0.0, 0.99)
        check_choice(type(self).__name__, "scope", self.scope, {"global", "per-layer"})
        check_choice(type(self).__name__, "kernel", self.kernel, {"dense", "csr"})


def prunable_linears(model, include_head: bool = False) -> list[str]:
    """The encoder layers' linears (plus pooler and head with ``include_head``)."""
    return [n for n in select_linears(model, keep_head_float=not include_head)
            if include_head or ".pooler." not in f".{n}."]


def apply_l1_pruning(model, config: L1PruneConfig) -> list[str]:
    """Prune ``model`` in place and make it permanent; returns the pruned module names."""
    from torch.nn.utils import prune

    names = prunable_linears(model, config.include_head)
    modules = dict(model.named_modules())
    if config.scope == "global":
        prune.global_unstructured(
            [(modules[n], "weight") for n in names], pruning_method=prune.L1Unstructured, amount=config.amount
        )
    else:
        for name in names:
            prune.l1_unstructured(modules[name], "weight", amount=config.amount)
    for name in names:
        prune.remove(modules[name], "weight")
    return names


def sparsity(model, names: list[str]) -> float:
    """Fraction of zero weights over the named linears."""
    modules = dict(model.named_modules())
    zeros = sum(int((modules[n].weight == 0).sum()) for n in names)
    total = sum(modules[n].weight.numel() for n in names)
    return zeros / total if total else 0.0


def _encode_sparse(weight: np.ndarray) -> tuple[str, dict[str, np.ndarray]]:
    """The smaller of bitmask + values and CSR for one 2-D weight."""
    nonzero = weight != 0
    values = weight[nonzero]
    bitmask = {"bitmask": np.packbits(nonzero.ravel()), "values": values}
    index_dtype = np.int16 if weight.shape[1] <= np.iinfo(np.int16).max else np.int32
    csr = {
        "crow": np.concatenate([[0], np.cumsum(nonzero.sum(axis=1))]).astype(np.int32),
        "col": np.nonzero(nonzero)[1].astype(index_dtype),
        "values": values,
    }
    size = {name: sum(a.nbytes for a in parts.values()) for name, parts in (("bitmask", bitmask), ("csr", csr))}
    return ("bitmask", bitmask) if size["bitmask"] <= size["csr"] else ("csr", csr)


def save_sparse(state_dict: dict, sparse_names: set[str], path: Path) -> dict[str, str]:
    """Write ``state_dict`` with the ``sparse_names`` tensors in sparse form; returns name -> encoding."""
    from safetensors.numpy import save_file

    arrays, layout = {}, {}
    for name, tensor in state_dict.items():
        array = tensor.detach().cpu().numpy()
        if name in sparse_names:
            encoding, parts = _encode_sparse(array)
            layout[name] = {"encoding": encoding, "shape": list(array.shape)}
            arrays.update({f"{name}::{part}": value for part, value in parts.items()})
        else:
            arrays[name] = np.ascontiguousarray(array)
    save_file(arrays, str(path), metadata={FORMAT_KEY: json.dumps(layout)})
    return {name: spec["encoding"] for name, spec in layout.items()}


def _build_l1(parent: Artifact, out: Path, config: L1PruneConfig, ctx: BuildContext) -> dict:

    model = load_torch_module(parent)
    names = apply_l1_pruning(model, config)
    leftovers = [n for n, _ in model.named_buffers() if n.endswith("_mask")] + [
        n for n, m in model.named_modules() if getattr(m, "_forward_pre_hooks", None)
    ]
    if leftovers:
        raise RuntimeError(f"pruning left masks or hooks behind: {leftovers[:5]}")
    state = model.state_dict()
    encodings = save_sparse(state, {f"{n}.weight" for n in names}, out / SPARSE_WEIGHTS)
    copy_side_files(parent.path, out)
    with scratch_dir("dense") as scratch:
        model.save_pretrained(scratch, safe_serialization=True)
        dense_bytes = sum(f.stat().st_size for f in Path(scratch).glob("*.safetensors"))
    counts: dict[str, int] = {}
    for encoding in encodings.values():
        counts[encoding] = counts.get(encoding, 0) + 1
    return {
        "pruned_linear_modules": len(names),
        "scope": config.scope,
        "pooler_and_head_pruned": config.include_head,
        "sparsity_of_pruned_linears": round(sparsity(model, names), 6),
        "sparsity_of_all_parameters": round(
            sum(int((p == 0).sum()) for p in model.parameters()) / sum(p.numel() for p in model.parameters()), 6
        ),
        "dense_size_bytes": dense_bytes,
        "sparse_size_bytes": (out / SPARSE_WEIGHTS).stat().st_size,
        "sparse_encodings": counts,
        "sparse_kernel": "torch.sparse.mm (CSR) for the pruned linears" if config.kernel == "csr"
        else "none: weights are densified at load and run by PyTorch's dense kernels",
    }


_PRUNED = dict(consumes=TORCH_MODEL, devices=frozenset({"cpu", "cuda"}), build=_build_l1, weights=(SPARSE_WEIGHTS,),
               version_packages=("torch", "transformers", "safetensors"),
               tasks=frozenset({TASK_CLASSIFICATION, TASK_CAUSAL_LM}), default_for=frozenset({TASK_CLASSIFICATION}),
               tolerance=None)

L1_SPARSITY_PERCENT = (5, 95)


def _l1_family(match) -> Technique:
    low, high = L1_SPARSITY_PERCENT
    percent = name_knob(match.group(0), match.group(1), "sparsity percent", low, high, f"l1-{low} to l1-{high}")
    return Technique(**_PRUNED, name=match.group(0), config=L1PruneConfig(amount=percent / 100), produces=TORCH_MODEL,
                     artifact_kind="torch-sparse",
                     summary=f"L1 unstructured pruning of {percent}% of the encoder layers' nn.Linear weights "
                             "(torch.nn.utils.prune, global threshold), made permanent; stored sparse (bitmask or CSR)")


register_technique_family(r"l1-(\d+)", "l1-50", _l1_family, defaults=("l1-30", "l1-40", "l1-50"),
                          listed_in_place=True)
register_variants(_PRUNED, [
    dict(name="l1-50-csr", config=L1PruneConfig(amount=0.5, kernel="csr"), produces=TORCH_FINAL,
         artifact_kind="torch-sparse-csr", devices=frozenset({"cpu"}), tasks=frozenset({TASK_CLASSIFICATION}),
         default_for=None,
         summary="l1-50's pruned weights run as CSR tensors with torch.sparse.mm (the CPU sparse kernel in the stack)"),
])
