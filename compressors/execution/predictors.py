"""Predictors: one ``predict`` interface whether a model runs in PyTorch or ONNX Runtime.

A predictor separates the untimed part (``prepare``: move pre-tokenized numpy
inputs into the runtime's tensors on the right device) from the timed part
(``run``: one forward pass, synchronised on GPU). Heavy imports (torch, onnxruntime)
stay inside functions, so the isolated memory probe of an ONNX model never imports
torch and vice versa. Which predictor an artifact becomes is its kind's loader's choice
(:mod:`compressors.execution.loaders`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from compressors.core.scratch import scratch_dir

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
