"""compressors/records/stats.py on synthetic samples: the false-alarm rate of the latency and accuracy tests
on identical distributions stays within alpha, and real shifts are found."""

import numpy as np
import pytest

from compressors.records.stats import (
    ACCURACY_ALPHA,
    LATENCY_ALPHA,
    SPREAD_FAMILY_ALPHA,
    between_run_spread,
    bootstrap_median_ci,
    latency_shift,
    pack_bools,
    paired_accuracy_difference,
    unpack_bools,
)


def _rounds(rng, n, median, spread=0.05):
    return median * (1 + spread * rng.standard_normal(n)) + rng.exponential(0.02 * median, n)  # noise + tail


def test_identical_timing_distributions_are_flagged_in_at_most_alpha_of_trials():
    rng = np.random.default_rng(0)
    trials = 400
    flagged = sum(latency_shift(_rounds(rng, 12, 1.0), _rounds(rng, 12, 1.0))["p"] < LATENCY_ALPHA
                  for _ in range(trials))
    assert flagged / trials <= LATENCY_ALPHA * 2  # the test's size, with room for 400 trials' sampling error


@pytest.mark.parametrize("rounds", [5, 12])
def test_a_twenty_percent_slowdown_is_flagged(rounds):
    rng = np.random.default_rng(1)
    found = sum(latency_shift(_rounds(rng, rounds, 1.0), _rounds(rng, rounds, 1.2))["p"] < LATENCY_ALPHA
                for _ in range(100))
    assert found >= 90, f"{found}/100 trials found a 20% slowdown with {rounds} rounds a side"
    shift = latency_shift(_rounds(rng, rounds, 1.0), _rounds(rng, rounds, 1.2))
    assert 1.1 < shift["ratio"] < 1.3 and shift["rounds"] == [rounds, rounds]


def test_accuracy_drop_interval_and_mcnemar_on_the_same_sentences():
    rng = np.random.default_rng(2)
    reference = rng.random(872) < 0.89
    same = reference.copy()
    result = paired_accuracy_difference(reference, same)
    assert result["drop_pp"] == 0 and result["ci_pp"] == [0.0, 0.0] and result["mcnemar_p"] == 1.0
    worse = reference.copy()
    worse[np.flatnonzero(reference)[:20]] = False  # 20 sentences lost: 2.29 pp
    result = paired_accuracy_difference(reference, worse)
    assert result["drop_pp"] == pytest.approx(20 / 872 * 100)
    assert result["ci_pp"][0] > 0 and result["mcnemar_p"] < ACCURACY_ALPHA
    assert (result["reference_only"], result["other_only"]) == (20, 0)
    swapped = reference.copy()  # 5 lost, 4 gained: not distinguishable from no change
    swapped[np.flatnonzero(reference)[:5]] = False
    swapped[np.flatnonzero(~reference)[:4]] = True
    result = paired_accuracy_difference(reference, swapped)
    assert result["ci_pp"][0] < 0 < result["ci_pp"][1] and result["mcnemar_p"] > 0.5


@pytest.mark.slow
def test_identical_classifiers_are_flagged_in_at_most_alpha_of_trials():
    rng = np.random.default_rng(3)
    flagged = 0
    for _ in range(300):
        truth_a = rng.random(872) < 0.89
        noisy = truth_a ^ (rng.random(872) < 0.02)  # the same model, 2% of sentences flip either way
        other = truth_a ^ (rng.random(872) < 0.02)
        flagged += paired_accuracy_difference(noisy, other)["mcnemar_p"] < ACCURACY_ALPHA
    assert flagged / 300 <= ACCURACY_ALPHA * 1.5


def test_bootstrap_interval_covers_the_median_and_packing_round_trips():
    median, low, high = bootstrap_median_ci([1.9, 2.0, 2.1, 2.05, 1.95, 2.2, 1.8])
    assert low <= median <= high and median == 2.0
    values = np.random.default_rng(4).random(872) < 0.5
    assert (unpack_bools(pack_bools(values), 872) == values).all() and len(pack_bools(values)) == 148


def test_between_run_spread_flags_no_unchanged_row_in_most_comparisons():
    # A/A comparisons of 40 configurations whose ratios each drift by ~8% between runs: in how many
    # does some row clear the bar on its own (without the threshold and the rank test)?
    rng = np.random.default_rng(2)
    trials = 400
    false = 0
    for _ in range(trials):
        changes = 0.08 * rng.standard_normal(40)
        false += bool((changes > between_run_spread(changes)["bar"]).any())
    assert false / trials <= SPREAD_FAMILY_ALPHA * 2, f"{false}/{trials} A/A comparisons flagged a row"


def test_between_run_spread_lets_one_real_slowdown_and_a_shift_of_every_row_stand_out():
    rng = np.random.default_rng(3)
    changes = 0.04 * rng.standard_normal(40)
    changes[7] = np.log(1.25)  # one configuration 25% slower against fp32
    spread = between_run_spread(changes)
    assert spread["rows"] == 40 and 3.2 < spread["z"] < 3.6  # t(39), one-sided 0.05 / 40
    flagged = np.flatnonzero(changes > spread["bar"]).tolist()
    assert 7 in flagged and len(flagged) <= 2  # an unchanged row clears it about 5% of the time (above)
    # every row 25% slower: the bar is measured from zero, so (nearly) all of them stand out
    everything = between_run_spread(changes + np.log(1.25))
    assert (changes + np.log(1.25) > everything["bar"]).mean() >= 0.9
    # too few rows to tell the machine's drift from a change: no spread, not a made-up one
    assert between_run_spread(changes[:7]) is None
