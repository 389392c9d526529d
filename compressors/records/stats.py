"""The statistics behind the suite's verdicts (numpy and scipy; nothing hand-rolled that they do).

* :func:`bootstrap_median_ci`: percentile-bootstrap interval of a median (paired speed ratios).
* :func:`paired_accuracy_difference`: accuracy drop between two classifiers on the *same* sentences,
  with a paired-bootstrap 95% interval and the exact McNemar test (a binomial test on the
  discordant sentences).
* :func:`latency_shift`: whether one set of per-round timings is slower than another: the median
  ratio and a one-sided Mann-Whitney U test.
* :func:`between_run_spread`: how far the paired speed ratios of two whole runs moved, row by row,
  when nothing changed: an empirical null (Efron 2004) from the bulk of the rows, and the bar a
  single row must clear to stand out of it.
* :func:`pack_bools` / :func:`unpack_bools`: per-example correctness saved compactly (one bit per
  sentence, base64) in the result row.

Decisions about alphas and thresholds are in docs/decisions/verdict-statistics.md.
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
# Between-run spread: the chance, over all rows of one comparison together, that a row which did not
# change is flagged for standing out of the spread (Bonferroni over the rows).
SPREAD_FAMILY_ALPHA = 0.05
# Fewer rows than this in common: the spread is not estimated (the within-run test alone decides).
SPREAD_MIN_ROWS = 8


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


def between_run_spread(log_changes, family_alpha: float = SPREAD_FAMILY_ALPHA,
                       min_rows: int = SPREAD_MIN_ROWS) -> dict | None:
    """The empirical null of a comparison's row-by-row changes, and the bar a row must clear.

    ``log_changes``: one value per configuration, the log of how much slower it got between two runs
    (its paired speed ratio before / after). The blocks of one run cannot see how much the machine's
    state moves a ratio between runs minutes apart (on a shared 2-core VM, an unchanged int8/fp32
    ratio at batch 32 moved 13-19% between runs); the other rows of the same comparison can: most of
    them did not change, so the bulk of their changes is the null (Efron, "Large-scale simultaneous
    hypothesis testing", JASA 2004). Its centre is the median change, its scale the normal-consistent
    median absolute deviation (scipy), robust to the few rows that did change.

    A row stands out when its change exceeds ``z`` scales, ``z`` the one-sided quantile of
    ``family_alpha`` / rows (Bonferroni) of Student's t with rows - 1 degrees of freedom (the scale is
    itself estimated; on normal changes of 40 rows the family's false-alarm rate is then ~7%, 12%
    with the normal quantile). The bar is measured from zero, not from the centre, so a change that
    moved every row alike (all slower against fp32) still stands out. Changes with heavier tails
    than normal get past the bar more often: it is one of three conditions of a latency regression
    (with the threshold and the within-run rank test), not the only one.

    Returns ``{"rows", "center", "scale", "z", "bar"}`` (log units; ``bar`` = z x scale), or None with
    fewer than ``min_rows`` rows.
    """
    from scipy.stats import median_abs_deviation, t

    values = np.asarray([v for v in log_changes if np.isfinite(v)], dtype=float)
    if values.size < min_rows:
        return None
    scale = float(median_abs_deviation(values, scale="normal"))
    z = float(t.isf(family_alpha / values.size, values.size - 1))
    return {"rows": int(values.size), "center": float(np.median(values)), "scale": scale, "z": z,
            "bar": z * scale}
