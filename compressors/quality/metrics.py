"""Measurements: accuracy, perplexity, artifact size, isolated peak memory, placement.

Definitions (docs/metrics.md says the same):

* accuracy: argmax accuracy on the model's evaluation rows (the full SST-2 dev split, 872 sentences,
  for the registered classifiers), tokenized once (cut at the model's maximum length,
  :func:`eval_max_length`; no SST-2 sentence is) in batches of 32 padded to their longest row.
* perplexity (causal LMs, :func:`perplexity`): exp of the mean token negative
  log-likelihood on WikiText-2 raw test (the rows joined with ``"\n\n"``, see
  :func:`compressors.quality.data.load_wikitext`), tokenized once without special tokens and cut
  into non-overlapping windows of :data:`PERPLEXITY_WINDOW` tokens (stride = window). In
  each window every token after the first is predicted from the tokens before it in
  the same window; the mean is over all predicted tokens of all windows. The CPU tier
  evaluates the first :data:`CPU_EVAL_TOKENS` tokens (the same tokens for every
  technique); the ``slow`` variant evaluates the whole test set (its last, shorter
  window included).
* accuracy drop: fp32 accuracy of the same model minus this accuracy, in
  percentage points (positive = worse).
* size: bytes of the artifact's weight files (safetensors, ONNX file, quantized
  state dict), not its tokenizer or config.
* peak memory: what loading the artifact and evaluating the whole dev split adds
  to a process that has imported the runtime (``compressors.execution.runtime.RUNTIME_IMPORTS``):
  a fresh process imports the runtime, notes its RSS, restarts the kernel's RSS
  high-water mark (``/proc/self/clear_refs``), loads, evaluates, and reports the
  new high-water mark minus the noted RSS. This is the design's "peak RSS of a
  process that loads and evaluates minus that of one that only imports the
  runtime", measured without the transient spike of importing torch, which
  would otherwise swallow any model smaller than it. Where the mark cannot be
  reset (non-Linux) it falls back to the two-process difference of ``ru_maxrss``.
  The import-only process's own peak is reported as ``runtime_rss_bytes``.
  Accuracy is taken from the same process, so it is measured on the model as
  reloaded from its serialized artifact, not on an in-memory object. That process is
  :mod:`compressors.evaluation.probe`, launched by :func:`compressors.evaluation.isolated.measure_isolated`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import ClassVar

import numpy as np

from compressors import CompressbenchError
from compressors.core.cache import Artifact
from compressors.execution.runtime import Encoded, Predictor

EVAL_BATCH_SIZE = 32
EVAL_MAX_LENGTH = 128
# Perplexity: window length (tokens), and the CPU tier's token budget: 32 windows, which
# keeps one evaluation of smollm2-135m under about a minute on 2 cores.
PERPLEXITY_WINDOW = 512
CPU_EVAL_TOKENS = 32 * PERPLEXITY_WINDOW
# Rows of logits turned into log-probabilities at once: bounds the transient memory of the
# log-softmax (a 512 x 49,152 float32 logit matrix is 100 MB) so the memory metric shows
# the model, not the scoring.
NLL_CHUNK_ROWS = 64


class MeasurementError(CompressbenchError):
    """A measurement process failed; the message carries its stderr."""


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """Pre-tokenized evaluation batches and their labels."""

    kind: ClassVar[str] = "accuracy"
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


@dataclasses.dataclass(frozen=True)
class TokenWindows:
    """Pre-tokenized perplexity windows (each an int64 array of shape ``(1, n)``).

    Args:
        windows: the windows, in text order.
        window: the window length asked for (the last window may be shorter).
        corpus_tokens: tokens in the whole tokenized text (before any budget).
        checksum: sha256 of the corpus checksum and every window's token ids.
    """

    kind: ClassVar[str] = "perplexity"
    windows: tuple[np.ndarray, ...]
    window: int
    corpus_tokens: int
    checksum: str

    @property
    def n_tokens(self) -> int:
        return sum(int(w.shape[1]) for w in self.windows)

    @property
    def n_predicted(self) -> int:
        return sum(int(w.shape[1]) - 1 for w in self.windows)

    def __len__(self) -> int:
        return self.n_predicted

    def describe(self) -> dict:
        return {"window": self.window, "stride": self.window, "windows": len(self.windows),
                "tokens": self.n_tokens, "predicted_tokens": self.n_predicted,
                "corpus_tokens": self.corpus_tokens, "checksum": self.checksum[:16]}

    def save(self, path: Path) -> None:
        arrays = {f"w{i}": w for i, w in enumerate(self.windows)}
        np.savez(path, window=np.array(self.window), corpus_tokens=np.array(self.corpus_tokens),
                 checksum=np.array(self.checksum), **arrays)

    @classmethod
    def load(cls, path: Path) -> TokenWindows:
        with np.load(path) as data:
            count = sum(1 for k in data.files if k.startswith("w") and k[1:].isdigit())
            return cls(tuple(data[f"w{i}"] for i in range(count)), int(data["window"]), int(data["corpus_tokens"]),
                       str(data["checksum"]))


def make_token_windows(tokenizer, corpus, window: int = PERPLEXITY_WINDOW,
                       max_tokens: int | None = None) -> TokenWindows:
    """Tokenize ``corpus`` (a :class:`~compressors.quality.data.TextCorpus`) into perplexity windows.

    The whole text is tokenized at once without special tokens (no BOS/EOS inserted), so
    windows cut the token stream, not the text. ``max_tokens`` keeps the first that many
    tokens (the CPU tier's budget); None keeps all. Windows do not overlap; a last window
    shorter than ``window`` is kept if it has at least 2 tokens (1 to predict).
    """
    if window < 2:
        raise ValueError(f"perplexity window {window!r} must be at least 2 tokens")
    if max_tokens is not None and max_tokens < 2:
        raise ValueError(f"perplexity token budget {max_tokens!r} must be at least 2 tokens (or None for all)")
    ids = np.asarray(tokenizer(corpus.text, add_special_tokens=False, verbose=False)["input_ids"], dtype=np.int64)
    corpus_tokens = int(ids.shape[0])
    if max_tokens is not None:
        ids = ids[:max_tokens]
    windows = tuple(
        ids[start : start + window][None, :]
        for start in range(0, len(ids), window)
        if len(ids[start : start + window]) >= 2
    )
    if not windows:
        raise ValueError(f"{corpus.name}: {len(ids)} tokens, too few for one perplexity window")
    digest = hashlib.sha256(corpus.checksum.encode())
    digest.update(f"window={window}".encode())
    for w in windows:
        digest.update(w.tobytes())
    return TokenWindows(windows, window, corpus_tokens, digest.hexdigest())


def sequence_nll(logits: np.ndarray, ids: np.ndarray) -> tuple[float, int]:
    """``(sum of negative log-likelihoods, tokens predicted)`` of one sequence.

    ``logits`` (n, vocab) are the model's outputs at positions 0..n-1 and ``ids`` (n,) the
    tokens; position t predicts token t+1. Log-softmax in float64, :data:`NLL_CHUNK_ROWS`
    rows at a time.
    """
    n = int(ids.shape[0])
    total = 0.0
    for start in range(0, n - 1, NLL_CHUNK_ROWS):
        stop = min(start + NLL_CHUNK_ROWS, n - 1)
        rows = logits[start:stop].astype(np.float64)
        peak = rows.max(axis=1, keepdims=True)
        log_z = np.log(np.exp(rows - peak).sum(axis=1)) + peak[:, 0]
        total += float((log_z - rows[np.arange(stop - start), ids[start + 1 : stop + 1]]).sum())
    return total, n - 1


def perplexity(predictor: Predictor, windows: TokenWindows) -> dict:
    """Perplexity of ``predictor`` (a causal LM: its logits are next-token scores) on ``windows``.

    Returns ``perplexity`` = exp(``mean_nll``) over ``predicted_tokens`` tokens.
    """
    total, count = 0.0, 0
    for window in windows.windows:
        logits = predictor.logits(predictor.prepare({"input_ids": window}))
        nll, n = sequence_nll(logits[0], window[0])
        total, count = total + nll, count + n
    mean = total / count
    if not math.isfinite(mean):
        raise MeasurementError(
            f"perplexity is not finite (mean NLL {mean}) over {count} tokens: the model's logits overflowed or hold NaN"
        )
    return {"perplexity": math.exp(mean), "mean_nll": mean, "predicted_tokens": count}


def encode_sentences(
    tokenizer, sentences, batch_size: int = EVAL_BATCH_SIZE, max_length: int = EVAL_MAX_LENGTH, pairs=None
) -> list[Encoded]:
    """Tokenize ``sentences`` (with ``pairs``, their second texts, as true pairs) into int64 numpy batches
    padded to each batch's longest."""
    batches = []
    for start in range(0, len(sentences), batch_size):
        enc = tokenizer(
            list(sentences[start : start + batch_size]),
            None if pairs is None else list(pairs[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="np",
        )
        batches.append({k: v.astype(np.int64) for k, v in enc.items()})
    return batches


def eval_max_length(tokenizer, config: dict | None = None) -> int:
    """Where evaluation rows are cut: the model's maximum (its position embeddings, or the tokenizer's
    limit when smaller); each batch is padded to its longest row only, so a short-text data set costs
    nothing more, and a long one is measured on what the model can read."""
    limits = [int(v) for v in ((config or {}).get("max_position_embeddings"), (config or {}).get("n_positions"),
                               getattr(tokenizer, "model_max_length", None)) if isinstance(v, int) and 0 < v < 1e6]
    # BERT-style position tables count the specials; RoBERTa's reserve 2 more (padding_idx + 1)
    if (config or {}).get("model_type") in ("roberta", "xlm-roberta", "camembert") and limits:
        limits = [min(limits) - 2]
    return min(limits) if limits else EVAL_MAX_LENGTH


def make_eval_set(tokenizer, split, max_length: int = EVAL_MAX_LENGTH) -> EvalSet:
    """Tokenize a :class:`~compressors.quality.data.TextClassificationSplit` for evaluation, rows cut at
    ``max_length`` tokens (:func:`eval_max_length`)."""
    batches = encode_sentences(tokenizer, split.sentences, max_length=max_length, pairs=split.pairs)
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




def artifact_identity(manifest: dict) -> str:
    """An artifact's key and the digest of its files: what a stored measurement is of. The files count
    too: an entry adopted from a shared remote cache (another machine's build of the same key) is
    other bytes under the same key, and is measured again."""
    from compressors.core.cache import content_key

    return f"{manifest['key']}:{content_key(manifest['files'])}"


def measurement_path(root: Path, artifact_key: str, eval_checksum: str, device: str, cpu, version: str) -> Path:
    """Where the isolated measurement of an artifact (:func:`artifact_identity`) on these evaluation
    inputs, device and CPU is stored; ``version``: the measurement version, derived from what the isolated
    process measures and its code (compressors.evaluation.isolated.measurement_version), so a change to either
    measures again."""
    key_parts = {"artifact": artifact_key, "eval": eval_checksum, "device": device, "cpu": cpu.name,
                 "flags": list(cpu.flags), "version": version}
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:20]
    return Path(root) / "measurements" / f"{key}.json"


def stored_measurement(root: Path, artifact: Artifact, eval_set, device: str, cpu, compute, *, version: str,
                       refresh: bool = False):
    """``compute()`` (an isolated measurement) once per artifact, evaluation inputs, device, CPU and measurement
    ``version`` (:func:`measurement_path`): later runs on this machine reuse the stored result
    (``measurement.reused``), so a warm run times instead of re-evaluating; ``refresh`` (``--remeasure``)
    measures again and replaces it."""
    import datetime

    path = measurement_path(root, artifact_identity(artifact.manifest), eval_set.checksum, device, cpu, version)
    key = path.stem
    if path.is_file() and not refresh:
        try:
            stored = json.loads(path.read_text())
            return {**stored, "measurement": {**stored["measurement"], "reused": True}}
        except (OSError, json.JSONDecodeError, KeyError):
            pass  # unreadable: measure again
    result = compute()
    result["measurement"] = {"key": key, "reused": False,
                             "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(result))
        partial.replace(path)
    except OSError:  # a read-only cache: the figures are still used, only not kept
        pass
    return result


