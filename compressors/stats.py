"""The statistics behind the suite's verdicts (numpy and scipy; nothing hand-rolled that they do).

* :func:`bootstrap_median_ci`: percentile-bootstrap interval of a median (paired speed ratios).
* :func:`paired_accuracy_difference`: accuracy drop between two classifiers on the *same* sentences,
  with a paired-bootstrap 95% interval and the exact McNemar test (a binomial test on the
  discordant sentences).
* :func:`latency_shift`: whether one set of per-round timings is slower than another: the median
  ratio and a one-sided Mann-Whitney U test.
* :func:`pack_bools` / :func:`unpack_bools`: per-example correctness saved compactly (one bit per
  sentence, base64) in the result row.

Decisions about alphas and thresholds are in compressors/decisions/verdict-statistics.md.
"""

from __future__ import annotations

import base64

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
# One-sided Mann-Whitney U alpha for a latency regression (with the size threshold as well).
LATENCY_ALPHA = 0.01
# Exact McNemar alpha for an accuracy change on the same sentences (with the size threshold as well).
ACCURACY_ALPHA = 0.05


def bootstrap_median_ci(values, confidence: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                        seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """``(median, low, high)``: the median of ``values`` and its percentile-bootstrap interval."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("no values to summarise")
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(data, size=(resamples, data.size), replace=True), axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(np.median(data)), float(low), float(high)


def pack_bools(values) -> str:
    """A boolean vector as base64 of its packed bits (872 sentences: 148 characters)."""
    return base64.b64encode(np.packbits(np.asarray(values, dtype=bool)).tobytes()).decode("ascii")


def unpack_bools(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)


def paired_accuracy_difference(reference_correct, other_correct, confidence: float = 0.95,
                               resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    """Accuracy of ``reference`` minus that of ``other`` on the same examples, in percentage points.

    Returns ``drop_pp``, ``ci_pp`` (paired bootstrap over examples), ``mcnemar_p`` (exact, two-sided),
    and the discordant counts: ``reference_only`` (right only in the reference) and ``other_only``.
    """
    from scipy.stats import binomtest

    a = np.asarray(reference_correct, dtype=bool)
    b = np.asarray(other_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two correctness vectors of one length, got {a.shape} and {b.shape}")
    diff = a.astype(float) - b.astype(float)
    rng = np.random.default_rng(seed)
    samples = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1) * 100
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return {"drop_pp": float(diff.mean() * 100), "ci_pp": [round(float(low), 3), round(float(high), 3)],
            "mcnemar_p": p, "reference_only": only_a, "other_only": only_b, "n": int(a.size)}


def latency_shift(before, after) -> dict:
    """How much slower ``after``'s per-round timings are than ``before``'s: the median ratio and the
    one-sided Mann-Whitney U p-value for "after is slower" (scipy's exact or asymptotic method)."""
    from scipy.stats import mannwhitneyu

    a = np.asarray(before, dtype=float)
    b = np.asarray(after, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError("need per-round timings on both sides")
    p = float(mannwhitneyu(b, a, alternative="greater").pvalue)
    return {"ratio": float(np.median(b) / np.median(a)), "p": p, "rounds": [int(a.size), int(b.size)]}
