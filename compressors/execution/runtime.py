"""One ``predict`` interface whether a model runs in PyTorch or ONNX Runtime.

An artifact's kind (``hf-torch``, ``torch-dynamic-int8``, ``onnx``, ...) names
the loader that turns it into a :class:`Predictor`. Technique modules register
the loaders for the kinds they produce. This module and every loader keep their
heavy imports (torch, onnxruntime) inside functions, so the isolated memory probe
of an ONNX model never imports torch and vice versa.

A predictor separates the untimed part (``prepare``: move pre-tokenized numpy
inputs into the runtime's tensors on the right device) from the timed part
(``run``: one forward pass, synchronised on GPU).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from compressors.core.cache import Artifact
from compressors.core.registry import Registry
from compressors.core.scratch import scratch_dir
from compressors.execution.hf import hf_auto_class

# What "only imports the runtime" means for the memory baseline of each runtime.
RUNTIME_IMPORTS: dict[str, tuple[str, ...]] = {
    "torch": ("numpy", "torch", "transformers"),
    "onnxruntime": ("numpy", "onnxruntime"),
    "openvino": ("numpy", "openvino"),
}

Encoded = dict[str, np.ndarray]


class Predictor(Protocol):
    runtime: str

    def prepare(self, encoded: Encoded) -> Any:
        """Turn pre-tokenized int64 arrays into runtime inputs (untimed)."""

    def run(self, prepared: Any) -> Any:
        """One forward pass on prepared inputs (the timed call)."""

    def logits(self, prepared: Any) -> np.ndarray:
        """Forward pass returning float32 logits as numpy."""

    def placement(self) -> dict:
        """Where weights and kernels actually are: devices, providers, threads."""


@dataclasses.dataclass(frozen=True)
class ArtifactLoader:
    """How to load one artifact kind.

    Args:
        runtime: key of :data:`RUNTIME_IMPORTS` (what the memory baseline imports).
        load: ``load(artifact, device) -> Predictor``.
        module: for kinds that hold a float PyTorch model (the ``TORCH_MODEL`` flow):
            ``module(artifact) -> nn.Module`` on CPU, what the next stage of a chain
            compresses further.
        pickled: loading unpickles the artifact (``torch.load(weights_only=False)``): it is built on each
            machine and never pulled from a shared remote cache.
    """

    runtime: str
    load: Callable[[Artifact, str], Predictor]
    module: Callable[[Artifact], Any] | None = None
    pickled: bool = False

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIME_IMPORTS:
            raise ValueError(f"runtime {self.runtime!r} not in {sorted(RUNTIME_IMPORTS)}")


ARTIFACT_LOADERS: Registry[ArtifactLoader] = Registry("artifact kind")


def loader_for(artifact: Artifact) -> ArtifactLoader:
    return ARTIFACT_LOADERS.get(artifact.kind)


def load_predictor(artifact: Artifact, device: str = "cpu") -> Predictor:
    """Load a cached artifact as a predictor on ``device`` (``"cpu"`` or ``"cuda"``)."""
    return loader_for(artifact).load(artifact, device)


def load_torch_module(artifact: Artifact):
    """The float PyTorch model an artifact holds, on CPU in eval mode (what a chain's next stage takes)."""
    loader = loader_for(artifact)
    if loader.module is None:
        raise ValueError(f"a {artifact.kind!r} artifact holds no float PyTorch model to compress further")
    return loader.module(artifact).eval()


class TorchPredictor:
    """A PyTorch module returning an object with ``.logits`` (Hugging Face style)."""

    runtime = "torch"

    def __init__(self, model, device: str = "cpu", extra_placement: dict | None = None):
        import inspect

        self.model = model.eval()
        self.device = device
        self.accepts = set(inspect.signature(model.forward).parameters)
        self.extra_placement = extra_placement or {}

    def prepare(self, encoded: Encoded):
        import torch

        return {
            k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device)
            for k, v in encoded.items()
            if k in self.accepts
        }

    def run(self, prepared):
        import torch

        with torch.inference_mode():
            out = self.model(**prepared).logits
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    def logits(self, prepared) -> np.ndarray:
        return self.run(prepared).float().cpu().numpy()

    def generate(self, prepared, new_tokens: int):
        """Greedy decoding of exactly ``new_tokens`` tokens after the prompt (causal LMs; the
        Hugging Face ``generate`` loop with its KV cache). Returns the token ids, prompt included."""
        import torch

        config = self.model.generation_config
        pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
        if isinstance(pad, list):
            pad = pad[0]
        with torch.inference_mode():
            out = self.model.generate(
                **prepared,
                do_sample=False,
                num_beams=1,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=pad,
            )
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    def placement(self) -> dict:
        import torch

        from compressors.machine.placement import torch_placement

        devices = sorted(
            {str(p.device) for p in self.model.parameters()} | {str(b.device) for b in self.model.buffers()}
        )
        dtypes = sorted({str(p.dtype).replace("torch.", "") for p in self.model.parameters()})
        return {
            "runtime": "torch",
            "parameter_devices": devices,
            "parameter_dtypes": dtypes,
            "torch_threads": torch.get_num_threads(),
            **torch_placement(self.model, self.device),  # requested_device, per-device counts, what is off it
            **self.extra_placement,
        }


class OrtPredictor:
    """An ONNX Runtime session whose first output is the logits.

    ``model_path`` and ``providers`` are what the session was made from; with them
    :meth:`profile_node_providers` can find out which provider each node really ran on.
    """

    runtime = "onnxruntime"

    def __init__(
        self, session, requested_device: str = "cpu", model_path: str | None = None, providers: list | None = None
    ):
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [session.get_outputs()[0].name]
        self.requested_device = requested_device
        self.model_path = model_path
        self.providers = providers
        self.node_providers: dict[str, dict[str, int]] | None = None

    def prepare(self, encoded: Encoded) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in encoded]
        if missing:
            raise ValueError(f"ONNX graph needs inputs {missing}; got {sorted(encoded)}")
        return {n: np.ascontiguousarray(encoded[n], dtype=np.int64) for n in self.input_names}

    def run(self, prepared):
        return self.session.run(self.output_names, prepared)[0]

    def logits(self, prepared) -> np.ndarray:
        return np.asarray(self.run(prepared), dtype=np.float32)

    def profile_node_providers(self, prepared) -> dict[str, dict[str, int]]:
        """Run ``prepared`` once in a profiling twin of the session and record which
        provider ran each node (op types per provider; see ``compressors.machine.placement``).
        A twin, so the timed session never carries profiling overhead."""

        import onnxruntime as ort

        from compressors.machine.placement import ort_profiled_node_providers

        if self.model_path is None:
            raise ValueError("this predictor was made without its model path; cannot profile node placement")
        with scratch_dir("ort-profile") as tmp:
            options = ort.SessionOptions()
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tmp) / "profile")
            twin = ort.InferenceSession(self.model_path, options, providers=self.providers)
            twin.run(self.output_names, prepared)
            self.node_providers = ort_profiled_node_providers(twin.end_profiling())
        return self.node_providers

    def placement(self) -> dict:
        from compressors.machine.placement import ort_placement

        options = self.session.get_session_options()
        return {
            "runtime": "onnxruntime",
            **ort_placement(self.session, self.requested_device, self.node_providers),  # providers it really has
            "intra_op_threads": options.intra_op_num_threads,  # 0 = ONNX Runtime's default (physical cores)
        }


def ort_providers(device: str) -> list:
    """Providers to request for ``device`` (``cpu``, ``cuda``, ``cuda:N``); a CUDA request never
    lists the CPU provider, so a missing CUDA provider fails instead of silently running on CPU
    (and if ONNX Runtime falls back anyway, ``get_providers()`` shows it and the placement check fails)."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    kind, _, index = device.partition(":")
    if kind == "cuda" and (not index or index.isdigit()):
        return [("CUDAExecutionProvider", {"device_id": int(index or 0)})]
    raise ValueError(f"unknown device {device!r}; valid: cpu, cuda, cuda:N")


def hf_torch_module(artifact: Artifact):
    # dtype="auto": keep the dtype the weights were saved in (bf16 artifacts stay bf16).
    return hf_auto_class(artifact.path).from_pretrained(artifact.path, dtype="auto")


def torch_module_predictor(module_loader: Callable[[Artifact], Any]) -> Callable[[Artifact, str], TorchPredictor]:
    """A ``load`` for kinds whose predictor is just their float module moved to the device."""

    def load(artifact: Artifact, device: str) -> TorchPredictor:
        return TorchPredictor(module_loader(artifact).to(device), device)

    return load


def load_pickled_module(
    artifact: Artifact, filename: str, device: str, extra_placement: dict | None = None
) -> TorchPredictor:
    """Load a whole ``torch.save``-d module (quantized modules whose packed weights no
    state-dict format holds).

    ``weights_only`` loading cannot read such a file; it is one this suite wrote into its own
    cache, verified against the manifest's sha256 before loading, under a cache key that holds
    the torch/transformers versions that can unpickle it. ``mmap`` avoids a second copy.
    """
    import torch

    model = torch.load(artifact.file(filename), weights_only=False, mmap=True, map_location=device)
    return TorchPredictor(model, device, extra_placement)


def load_onnx(artifact: Artifact, device: str) -> OrtPredictor:
    import onnxruntime as ort

    providers = ort_providers(device)
    names = [p if isinstance(p, str) else p[0] for p in providers]
    missing = [p for p in names if p not in ort.get_available_providers()]
    if missing:
        raise RuntimeError(f"ONNX Runtime here has no {missing}; available: {ort.get_available_providers()}")
    path = str(artifact.file(artifact.meta.get("onnx_file", "model.onnx")))
    return OrtPredictor(ort.InferenceSession(path, providers=providers), device, path, providers)


ARTIFACT_LOADERS.register("hf-torch", ArtifactLoader("torch", torch_module_predictor(hf_torch_module), hf_torch_module))
ARTIFACT_LOADERS.register("onnx", ArtifactLoader("onnxruntime", load_onnx))
