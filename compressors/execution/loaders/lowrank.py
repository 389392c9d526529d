"""``torch-lowrank``: a model whose linears were replaced by truncated-SVD factor pairs (``lowrank-*``):
the architecture from ``config.json``, each factorized linear rebuilt at the rank ``meta["ranks"]`` gives,
then the safetensors state dict loaded strictly."""

from __future__ import annotations

from compressors.core.cache import Artifact
from compressors.execution.hf import hf_auto_class
from compressors.execution.loaders.base import ARTIFACT_LOADERS, ArtifactLoader, torch_module_predictor
from compressors.execution.nn import replace_module

LOWRANK_WEIGHTS = "model_lowrank.safetensors"


def factorized_linear(in_features: int, out_features: int, rank: int, bias: bool):
    """``Linear(in, rank) -> Linear(rank, out)``: what a factorized linear is, in the build and at load."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(in_features, rank, bias=False), torch.nn.Linear(rank, out_features, bias=bias)
    )


def lowrank_module(artifact: Artifact):
    from safetensors.torch import load_file
    from transformers import AutoConfig

    model = hf_auto_class(artifact.path).from_config(AutoConfig.from_pretrained(artifact.path))
    ranks = artifact.meta["ranks"]
    for name, rank in ranks.items():
        linear = model.get_submodule(name)
        replace_module(
            model, name, factorized_linear(linear.in_features, linear.out_features, rank, linear.bias is not None)
        )
    model.load_state_dict(load_file(str(artifact.file(LOWRANK_WEIGHTS))), strict=True)
    return model.eval()


ARTIFACT_LOADERS.register(
    "torch-lowrank", ArtifactLoader("torch", torch_module_predictor(lowrank_module), lowrank_module)
)
