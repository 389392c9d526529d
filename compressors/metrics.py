"""Measurements: accuracy, artifact size, isolated peak memory, placement.

Definitions (the README's metric table says the same):

* accuracy: argmax accuracy on the full SST-2 dev split (872 sentences),
  tokenized once (max length 128, no sentence is truncated) in batches of 32
  padded to their longest sentence.
* accuracy drop: fp32 accuracy of the same model minus this accuracy, in
  percentage points (positive = worse).
* size: bytes of the artifact's weight files (safetensors, ONNX file, quantized
  state dict), not its tokenizer or config.
* peak memory: what loading the artifact and evaluating the whole dev split adds
  to a process that has imported the runtime (``compressors.runtime.RUNTIME_IMPORTS``):
  a fresh process imports the runtime, notes its RSS, restarts the kernel's RSS
  high-water mark (``/proc/self/clear_refs``), loads, evaluates, and reports the
  new high-water mark minus the noted RSS. This is the design's "peak RSS of a
  process that loads and evaluates minus that of one that only imports the
  runtime", measured without the transient spike of importing torch, which
  would otherwise swallow any model smaller than it. Where the mark cannot be
  reset (non-Linux) it falls back to the two-process difference of ``ru_maxrss``.
  The import-only process's own peak is reported as ``runtime_rss_bytes``.
  Accuracy is taken from the same process, so it is measured on the model as
  reloaded from its serialized artifact, not on an in-memory object.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from compressors import CompressbenchError
from compressors.cache import Artifact
from compressors.gpu_memory import nonnegative_delta
from compressors.runtime import Encoded, Predictor, loader_for

EVAL_BATCH_SIZE = 32
EVAL_MAX_LENGTH = 128
PROBE_TIMEOUT_S = 1800


class MeasurementError(CompressbenchError):
    """A measurement process failed; the message carries its stderr."""


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """Pre-tokenized evaluation batches and their labels."""

    batches: tuple[Encoded, ...]
    labels: np.ndarray
    checksum: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def save(self, path: Path) -> None:
        arrays = {f"b{i}__{k}": v for i, batch in enumerate(self.batches) for k, v in batch.items()}
        np.savez(path, labels=self.labels, checksum=np.array(self.checksum), **arrays)

    @classmethod
    def load(cls, path: Path) -> EvalSet:
        with np.load(path) as data:
            batches: dict[int, dict[str, np.ndarray]] = {}
            for key in data.files:
                if key.startswith("b") and "__" in key:
                    index, name = key[1:].split("__", 1)
                    batches.setdefault(int(index), {})[name] = data[key]
            return cls(tuple(batches[i] for i in sorted(batches)), data["labels"], str(data["checksum"]))


def encode_sentences(tokenizer, sentences, batch_size: int = EVAL_BATCH_SIZE, max_length: int = EVAL_MAX_LENGTH) -> list[Encoded]:
    """Tokenize ``sentences`` into int64 numpy batches padded to each batch's longest."""
    batches = []
    for start in range(0, len(sentences), batch_size):
        enc = tokenizer(list(sentences[start : start + batch_size]), padding=True, truncation=True,
                        max_length=max_length, return_tensors="np")
        batches.append({k: v.astype(np.int64) for k, v in enc.items()})
    return batches


def make_eval_set(tokenizer, split) -> EvalSet:
    """Tokenize a :class:`~compressors.data.TextClassificationSplit` for evaluation."""
    batches = encode_sentences(tokenizer, split.sentences)
    digest = hashlib.sha256(split.checksum.encode())
    for batch in batches:
        for key in sorted(batch):
            digest.update(key.encode())
            digest.update(batch[key].tobytes())
    return EvalSet(tuple(batches), np.asarray(split.labels, dtype=np.int64), digest.hexdigest())


def predict_labels(predictor: Predictor, eval_set: EvalSet) -> np.ndarray:
    return np.concatenate([predictor.logits(predictor.prepare(b)).argmax(-1) for b in eval_set.batches])


def accuracy(predictor: Predictor, eval_set: EvalSet) -> float:
    """Argmax accuracy in percent."""
    predictions = predict_labels(predictor, eval_set)
    return float((predictions == eval_set.labels).mean() * 100.0)


def artifact_size_bytes(artifact: Artifact) -> int:
    return artifact.weight_bytes


def _run_probe(request: dict, timeout: int = PROBE_TIMEOUT_S) -> dict:
    with tempfile.TemporaryDirectory(prefix="compressbench-probe-") as tmp:
        req = Path(tmp) / "request.json"
        req.write_text(json.dumps(request))
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.run([sys.executable, "-m", "compressors.probe", str(req)], capture_output=True, text=True,
                              timeout=timeout, env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise MeasurementError(f"measurement process for {request.get('artifact', request['runtime'])} failed "
                               f"(exit {proc.returncode}):\n{tail}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise MeasurementError(f"measurement process printed no result; stdout: {proc.stdout[-500:]!r}")
    return json.loads(lines[-1])


@functools.cache
def runtime_baseline_rss(runtime: str, device: str = "cpu") -> int:
    """Peak RSS (bytes) of a fresh process that only imports ``runtime``."""
    return int(_run_probe({"mode": "import-only", "runtime": runtime, "device": device})["peak_rss_bytes"])


def measure_isolated(artifact: Artifact, eval_set: EvalSet, device: str = "cpu") -> dict:
    """Accuracy and memory of ``artifact`` measured in a fresh process.

    Returns a dict with ``accuracy`` (%), ``peak_rss_bytes`` (loaded + evaluated),
    ``runtime_rss_bytes`` (import-only baseline), ``peak_memory_bytes`` (their
    difference), ``placement``, and on CUDA ``vram_after_load_bytes`` / ``vram_peak_bytes``.
    """
    runtime = loader_for(artifact).runtime
    with tempfile.TemporaryDirectory(prefix="compressbench-eval-") as tmp:
        eval_file = Path(tmp) / "eval.npz"
        eval_set.save(eval_file)
        result = _run_probe({"mode": "evaluate", "runtime": runtime, "device": device,
                             "artifact": str(artifact.path), "eval_file": str(eval_file)})
    baseline = runtime_baseline_rss(runtime, device)
    result["runtime_rss_bytes"] = baseline
    flags = result.setdefault("memory_flags", [])  # a negative difference is never reported as memory use
    if result.get("hwm_reset"):
        result["peak_memory_bytes"] = nonnegative_delta("peak_memory", result["peak_rss_since_imports_bytes"],
                                                        result["rss_after_imports_bytes"], flags)
        result["memory_method"] = "rss-high-water-mark-after-imports"
    else:
        result["peak_memory_bytes"] = nonnegative_delta("peak_memory", result["peak_rss_bytes"], baseline, flags)
        result["memory_method"] = "peak-rss-minus-import-only-process"
    return result
