"""``openvino``: an OpenVINO IR (``openvino_model.xml`` + ``.bin``; ``openvino-*``) compiled for OpenVINO's CPU
plugin: latency hint (one stream), the run's thread count, and float32 inference precision set explicitly
(on CPUs with AVX512-BF16 or AMX the plugin otherwise runs in bf16 and keeps an LM's KV cache in u8). What it
really ran with is read back from the compiled model into ``placement``. A causal LM's IR is stateful: its KV
cache lives in the infer request."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compressors.core.cache import Artifact
from compressors.core.task_kinds import TASK_CAUSAL_LM
from compressors.execution.loaders.base import ARTIFACT_LOADERS, ArtifactLoader

OPENVINO_IR = "openvino_model.xml"
OPENVINO_WEIGHTS = "openvino_model.bin"

def runtime_config(causal_lm: bool, threads: int | None = None) -> dict:
    """What the CPU plugin is compiled with: latency hint, the run's threads, float32 precision."""
    from compressors.machine.hardware import this_cpu

    cpu = this_cpu()
    config = {"PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": threads or cpu.physical_cores or cpu.usable_threads,
              "INFERENCE_PRECISION_HINT": "f32"}
    if causal_lm:
        config["KV_CACHE_PRECISION"] = "f32"
    return config


PLACEMENT_PROPERTIES = ("EXECUTION_DEVICES", "INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS",
                        "PERFORMANCE_HINT", "ENABLE_CPU_PINNING", "KV_CACHE_PRECISION",
                        "DYNAMIC_QUANTIZATION_GROUP_SIZE")


class OpenVinoPredictor:
    """A compiled OpenVINO classifier: one synchronous infer request, logits as the first output."""

    runtime = "openvino"

    def __init__(self, xml: Path, config: dict, requested_device: str = "cpu"):
        import openvino as ov

        self.config = config
        self.requested_device = requested_device
        self.compiled = ov.Core().compile_model(str(xml), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]

    def prepare(self, encoded):
        missing = [n for n in self.input_names if n not in encoded]
        if missing:
            raise ValueError(f"OpenVINO model needs inputs {missing}; got {sorted(encoded)}")
        return {n: np.ascontiguousarray(encoded[n], dtype=np.int64) for n in self.input_names}

    def run(self, prepared):
        self.request.infer(prepared)
        return self.request.get_output_tensor(0).data  # the request's buffer: reused by the next call

    def logits(self, prepared) -> np.ndarray:
        return np.array(self.run(prepared), dtype=np.float32)

    def placement(self) -> dict:
        supported = {str(p) for p in self.compiled.get_property("SUPPORTED_PROPERTIES")}
        return {"runtime": "openvino", "requested_device": self.requested_device, "requested_config": self.config,
                **{k.lower(): _text(self.compiled.get_property(k)) for k in PLACEMENT_PROPERTIES if k in supported}}


def _text(value) -> str:
    """An OpenVINO property as plain text (element types as ``f32``/``bf16``, not ``<Type: 'float32'>``)."""
    return value.to_string() if hasattr(value, "to_string") else str(value)


class OpenVinoCausalLM(OpenVinoPredictor):
    """A stateful OpenVINO causal LM (batch 1): the KV cache lives in the infer request's state."""

    def prepare(self, encoded):
        return np.ascontiguousarray(encoded["input_ids"], dtype=np.int64)

    def _forward(self, ids, past: int):
        n = ids.shape[1]
        self.request.infer({"input_ids": ids, "attention_mask": np.ones((1, past + n), np.int64),
                            "position_ids": np.arange(past, past + n, dtype=np.int64)[None],
                            "beam_idx": np.zeros(1, np.int32)})
        return self.request.get_tensor("logits").data

    def run(self, prepared):
        self.request.reset_state()  # a fresh KV cache: one full-sequence forward
        return self._forward(prepared, 0)

    def generate(self, prepared, new_tokens: int) -> np.ndarray:
        """Greedy decoding of exactly ``new_tokens`` tokens; returns the ids, prompt included."""
        self.request.reset_state()
        out, logits, past = [prepared], self._forward(prepared, 0), prepared.shape[1]
        for step in range(new_tokens):
            token = np.array([[int(logits[0, -1].argmax())]], dtype=np.int64)
            out.append(token)
            if step < new_tokens - 1:
                logits = self._forward(token, past)
                past += 1
        return np.concatenate(out, axis=1)


def load_openvino(artifact: Artifact, device: str) -> OpenVinoPredictor:
    if device != "cpu":
        raise RuntimeError(f"openvino techniques run on OpenVINO's CPU plugin, not {device!r}")
    causal = artifact.meta.get("task") == TASK_CAUSAL_LM
    cls = OpenVinoCausalLM if causal else OpenVinoPredictor
    return cls(artifact.file(OPENVINO_IR), runtime_config(causal), device)


# .bin: the IR's weights, raw tensors (not a pickle)
ARTIFACT_LOADERS.register("openvino", ArtifactLoader("openvino", load_openvino, remote_file_types=frozenset({".bin"})))
