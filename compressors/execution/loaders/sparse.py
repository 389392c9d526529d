"""``torch-sparse`` and ``torch-sparse-csr``: a pruned model stored sparse (``l1-*``), in one safetensors file
whose pruned tensors are held as bitmask + values or CSR parts (``name::part``) and described by the
file's :data:`FORMAT_KEY` metadata (written by :func:`compressors.builders.techniques.pruning.save_sparse`).
``torch-sparse`` densifies the weights at load; ``torch-sparse-csr`` runs the pruned linears as CSR
tensors with ``torch.sparse.mm`` on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from compressors.core.cache import Artifact
from compressors.execution.hf import hf_auto_class
from compressors.execution.loaders.base import ARTIFACT_LOADERS, ArtifactLoader, torch_module_predictor
from compressors.execution.nn import replace_module
from compressors.execution.predictors import TorchPredictor

SPARSE_WEIGHTS = "model_sparse.safetensors"
FORMAT_KEY = "compressbench_sparse_format"


def decode_sparse(encoding: str, shape: list[int], parts: dict[str, np.ndarray]) -> np.ndarray:
    """The dense array of one tensor stored as ``encoding`` (``bitmask`` or ``csr``) in ``parts``."""
    dense = np.zeros(shape, dtype=parts["values"].dtype)
    if encoding == "bitmask":
        mask = np.unpackbits(parts["bitmask"], count=int(np.prod(shape))).astype(bool).reshape(shape)
        dense[mask] = parts["values"]
    elif encoding == "csr":
        rows = np.repeat(np.arange(shape[0]), np.diff(parts["crow"]))
        dense[rows, parts["col"].astype(np.int64)] = parts["values"]
    else:
        raise ValueError(f"unknown sparse encoding {encoding!r}; valid: bitmask, csr")
    return dense


def load_sparse(path: Path) -> dict:
    """Read a sparse-stored file back into a dense ``{name: torch.Tensor}`` state dict."""
    import torch
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(str(path), framework="numpy") as handle:
        layout = json.loads((handle.metadata() or {}).get(FORMAT_KEY, "{}"))
    arrays = load_file(str(path))
    state = {name: torch.from_numpy(array) for name, array in arrays.items() if "::" not in name}
    for name, spec in layout.items():
        parts = {key.split("::", 1)[1]: arrays[key] for key in arrays if key.startswith(f"{name}::")}
        state[name] = torch.from_numpy(decode_sparse(spec["encoding"], spec["shape"], parts))
    return state


def pruned_weight_names(path: Path) -> list[str]:
    """Names of the tensors a sparse-stored file holds in sparse form."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        return sorted(json.loads((handle.metadata() or {}).get(FORMAT_KEY, "{}")))


def sparse_module(artifact: Artifact):
    from transformers import AutoConfig

    model = hf_auto_class(artifact.path).from_config(AutoConfig.from_pretrained(artifact.path))
    state = load_sparse(artifact.file(SPARSE_WEIGHTS))
    # strict: every tensor the architecture has must come from the file (tied weights aside).
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if unexpected or set(missing) - tied:
        raise ValueError(
            f"{artifact.path}: sparse weights do not match the config (missing {missing}, unexpected {unexpected})"
        )
    return model.eval()


def csr_linear_class():
    import torch

    class CsrLinear(torch.nn.Module):
        """A linear whose weight is a CSR tensor, multiplied with ``torch.sparse.mm``."""

        def __init__(self, linear: torch.nn.Linear):
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.register_buffer("weight", linear.weight.detach().to_sparse_csr())
            self.bias = linear.bias

        def forward(self, x):
            flat = x.reshape(-1, self.in_features)
            out = torch.sparse.mm(self.weight, flat.t()).t()
            if self.bias is not None:
                out = out + self.bias
            return out.reshape(*x.shape[:-1], self.out_features)

    return CsrLinear


def load_csr(artifact: Artifact, device: str) -> TorchPredictor:
    if device != "cpu":
        raise RuntimeError(f"l1-*-csr runs PyTorch's CPU CSR kernel only, not {device!r}")
    model = sparse_module(artifact)
    csr_linear = csr_linear_class()
    names = [n.removesuffix(".weight") for n in pruned_weight_names(artifact.file(SPARSE_WEIGHTS))]
    for name in names:
        replace_module(model, name, csr_linear(model.get_submodule(name)))
    return TorchPredictor(model, device, {"sparse_kernel": "torch.sparse.mm (CSR)", "csr_linear_modules": len(names)})


ARTIFACT_LOADERS.register("torch-sparse-csr", ArtifactLoader("torch", load_csr))
ARTIFACT_LOADERS.register(
    "torch-sparse", ArtifactLoader("torch", torch_module_predictor(sparse_module), sparse_module)
)
