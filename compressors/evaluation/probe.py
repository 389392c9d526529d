"""Isolated measurement process: ``python -m compressors.evaluation.probe REQUEST.json``.

Run by :func:`compressors.evaluation.isolated.measure_isolated`, never by hand; the result is written as JSON to
the request's ``result_file`` (library output on stdout/stderr cannot be mistaken for it). In
``import-only`` mode it imports the runtime and reports its peak RSS; in
``evaluate`` mode it also loads the artifact, evaluates it on pre-tokenized
inputs and reports accuracy and predictions' checksum (classifiers) or perplexity
(causal LMs, ``eval_kind: perplexity``), placement and peak RSS.
Only the runtime's own modules are imported (an ONNX probe never imports torch).

Its results are stored per artifact and reused by later runs (:func:`compressors.quality.metrics.stored_measurement`),
under a key that holds the **measurement version**, derived from the metrics measured here and this code
(:func:`compressors.evaluation.isolated.measurement_version`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import sys
from pathlib import Path

from compressors.machine.process_memory import peak_rss_bytes, reset_peak_rss, status_bytes


def write_result(request: dict, result: dict) -> None:
    """Write the result where the request says (atomically: a reader never sees half a file)."""
    target = Path(request["result_file"])
    partial = target.with_suffix(".partial")
    partial.write_text(json.dumps(result))
    partial.replace(target)


def watch_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Exit as soon as the process that started this one is gone (the Linux parent-death signal
    covers it too; this covers other systems and the moment before that signal was set)."""
    import os
    import threading
    import time

    def watch():
        while True:
            if os.getppid() != parent_pid:
                os._exit(3)
            time.sleep(interval)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def main(request_path: str) -> None:
    request = json.loads(Path(request_path).read_text())
    if request.get("parent_pid"):
        watch_parent(int(request["parent_pid"]))
    from compressors.execution.runtime import RUNTIME_IMPORTS

    for module in RUNTIME_IMPORTS[request["runtime"]]:
        importlib.import_module(module)
    if request["mode"] == "import-only":
        write_result(request, {"peak_rss_bytes": peak_rss_bytes()})
        return

    import numpy as np

    from compressors.core.cache import Artifact, verify_entry
    from compressors.execution.runtime import load_predictor
    from compressors.quality.metrics import EvalSet, TokenWindows, perplexity, predict_labels
    from compressors.records.stats import pack_bools

    # Importing torch/transformers briefly peaks above where RSS settles; a peak taken over the
    # whole process would hide any model smaller than that spike. Restart the high-water mark
    # here, so the peak below is the one reached while loading and evaluating.
    rss_after_imports = status_bytes("VmRSS")
    hwm_reset = reset_peak_rss()

    folder = Path(request["artifact"])
    manifest, reason = verify_entry(folder)
    if manifest is None:
        raise SystemExit(f"artifact {folder} is not intact: {reason}")
    device = request["device"]
    vram = {}
    meter = None
    if device.startswith("cuda"):
        from compressors.machine.gpu_memory import VramMeter
        from compressors.machine.hardware import import_nvml

        # An ONNX Runtime probe must not import torch (its RSS would count): NVML only there.
        cuda = importlib.import_module("torch").cuda if request["runtime"] == "torch" else None
        meter = VramMeter(device, cuda, import_nvml())
        meter.before_load()
    predictor = load_predictor(Artifact(folder, manifest), device)
    if meter:
        meter.after_load()
    eval_set = None
    with meter.evaluating() if meter else contextlib.nullcontext():
        if request.get("eval_kind", EvalSet.kind) == TokenWindows.kind:
            quality = perplexity(predictor, TokenWindows.load(Path(request["eval_file"])))
        else:
            eval_set = EvalSet.load(Path(request["eval_file"]))
            predictions = predict_labels(predictor, eval_set)
            quality = {
                "accuracy": float((predictions == eval_set.labels).mean() * 100.0),
                "n_examples": int(eval_set.labels.shape[0]),
                "predictions_sha256": hashlib.sha256(predictions.astype(np.int64).tobytes()).hexdigest(),
                "correct": pack_bools(predictions == eval_set.labels),  # per sentence, for paired statistics
            }
    memory = {
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_rss_since_imports_bytes": status_bytes("VmHWM") if hwm_reset else None,
    }
    if meter:
        vram = meter.results()
        if eval_set is not None and hasattr(
            predictor, "profile_node_providers"
        ):  # after the memory readings: it loads a profiling twin
            predictor.profile_node_providers(predictor.prepare(eval_set.batches[0]))
    result = {
        **quality,
        "placement": predictor.placement(),
        "hwm_reset": hwm_reset,
        "rss_after_imports_bytes": rss_after_imports,
        **memory,
        # Evidence that the probe stayed within its runtime (an ONNX probe must not load torch).
        "runtimes_loaded": sorted(m for m in ("torch", "onnxruntime", "openvino") if m in sys.modules),
        **vram,
    }
    write_result(request, result)


if __name__ == "__main__":
    main(sys.argv[1])
