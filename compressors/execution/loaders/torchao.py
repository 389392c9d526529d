"""``torch-torchao``: a model whose linears hold torchao int8 tensor subclasses (``torchao-*``): its
``state_dict`` (``torch.save``, loaded with ``weights_only=True``) assigned into a model built from
``config.json``; with ``meta["compile"]`` the predictor runs through ``torch.compile``, compiling in
``prepare`` (untimed) and recording the seconds in ``placement()["torch_compile"]``."""

from __future__ import annotations

import time

from compressors.core.cache import Artifact
from compressors.execution.hf import hf_auto_class
from compressors.execution.loaders.base import ARTIFACT_LOADERS, ArtifactLoader
from compressors.execution.predictors import TorchPredictor

TORCHAO_WEIGHTS = "model_torchao.pt"

class CompiledTorchPredictor(TorchPredictor):
    """A module whose ``forward`` goes through ``torch.compile`` (so ``generate``, which calls
    ``forward`` step by step, runs compiled too); ``prepare`` compiles for the inputs' shape and the
    first ``generate`` of a prompt shape compiles the decoding steps, both recorded, never timed."""

    def __init__(self, model, device: str, extra_placement: dict | None = None):
        import torch

        super().__init__(model, device, extra_placement)
        model.forward = torch.compile(model.forward)
        self.compile_seconds: dict[str, float] = {}

    def generate(self, prepared, new_tokens: int):
        key = "generate-" + "x".join(str(d) for d in prepared["input_ids"].shape) + f"+{new_tokens}"
        if key not in self.compile_seconds:  # the first call compiles the prompt and decode graphs
            start = time.perf_counter()
            super().generate(prepared, new_tokens)
            self.compile_seconds[key] = round(time.perf_counter() - start, 3)
        return super().generate(prepared, new_tokens)

    def prepare(self, encoded):
        prepared = super().prepare(encoded)
        shape = "x".join(str(d) for d in next(iter(prepared.values())).shape)
        if shape not in self.compile_seconds:
            start = time.perf_counter()
            self.run(prepared)  # compiles (or reuses a graph that fits), never inside a timed region
            self.compile_seconds[shape] = round(time.perf_counter() - start, 3)
        return prepared

    def placement(self) -> dict:
        import torch

        counters = torch._dynamo.utils.counters
        return {**super().placement(), "torch_compile": {
            "backend": "inductor", "first_call_seconds_by_shape": dict(self.compile_seconds),
            "first_call_seconds_total": round(sum(self.compile_seconds.values()), 3),
            "unique_graphs": int(counters["stats"]["unique_graphs"]),
        }}


def torchao_module(artifact: Artifact):
    import torch
    from transformers import AutoConfig

    # A real (CPU) model, not a meta-device one: assign=True then replaces its linears' weights
    # by the saved Int8Tensors and keeps non-persistent buffers (a meta model gave NaN logits).
    model = hf_auto_class(artifact.path).from_config(AutoConfig.from_pretrained(artifact.path))
    state = torch.load(artifact.file(TORCHAO_WEIGHTS), weights_only=True, mmap=True)
    model.load_state_dict(state, assign=True, strict=True)
    model.tie_weights()  # assign=True leaves tied weights (a causal LM's lm_head) as two parameters
    return model.eval()


def load_torchao(artifact: Artifact, device: str) -> TorchPredictor:
    model = torchao_module(artifact).to(device)
    scheme = artifact.meta["scheme"]
    kernel = "torch._int_mm (int8 x int8, activations quantized per row)" if scheme == "int8-dynamic" else \
        "int8 weights dequantized into a float matmul"
    extra = {"torchao_scheme": scheme, "weight_tensor": artifact.meta.get("weight_tensor"), "kernel": kernel}
    if artifact.meta.get("compile"):
        return CompiledTorchPredictor(model, device, extra)
    return TorchPredictor(model, device, extra)


# .pt: a state dict read with torch.load(weights_only=True), which refuses anything but tensors and containers
ARTIFACT_LOADERS.register("torch-torchao",
                          ArtifactLoader("torch", load_torchao, remote_file_types=frozenset({".pt"})))
