"""analysis/multiplicity.py: the paired t test against scipy, the adjustments against hand-worked
textbook values and scipy's own Benjamini-Hochberg, and the levels of the intervals that go with
them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis.multiplicity import adjust, direction, interval_level, paired_test

# Hand-worked: sorted 0.005, 0.01, 0.03, 0.04 (m = 4).
# Holm: 4 x 0.005 = 0.02, 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(1 x 0.04, 0.06) = 0.06.
# BH: 4/1 x 0.005 = 0.02, 4/2 x 0.01 = 0.02, 4/3 x 0.03 = 0.04, 4/4 x 0.04 = 0.04 (running minimum from the top).
SMALL = [0.01, 0.04, 0.03, 0.005]
SMALL_HOLM = [0.03, 0.06, 0.06, 0.02]
SMALL_BH = [0.02, 0.04, 0.04, 0.02]
# Benjamini and Hochberg (1995), section 4: 15 p-values; at 0.05 BH rejects the 4 smallest, Holm
# (as Bonferroni) the 3 smallest.
BH_1995 = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240, 0.4262,
           0.5719, 0.6528, 0.7590, 1.0000]


def test_holm_on_a_hand_worked_example():
    out = adjust(SMALL, "holm")
    assert out.p_adjusted == pytest.approx(SMALL_HOLM)
    assert list(out.rejected) == [True, False, False, True] and out.m == 4


def test_bh_on_a_hand_worked_example_and_against_scipy():
    out = adjust(SMALL, "bh")
    assert out.p_adjusted == pytest.approx(SMALL_BH) and out.rejected.all()
    for p in (SMALL, BH_1995, list(np.random.default_rng(0).uniform(0, 0.2, 30))):
        assert adjust(p, "bh").p_adjusted == pytest.approx(stats.false_discovery_control(p, method="bh"))


def test_the_benjamini_hochberg_1995_example():
    assert adjust(BH_1995, "bh").rejections == 4
    holm = adjust(BH_1995, "holm")
    assert holm.rejections == 3 and list(np.flatnonzero(holm.rejected)) == [0, 1, 2]


def test_none_leaves_p_values_and_nan_stays_out_of_the_family():
    out = adjust([0.01, math.nan, 0.2], "none")
    assert out.p_adjusted[0] == 0.01 and math.isnan(out.p_adjusted[1]) and list(out.rejected) == [True, False, False]
    holm = adjust([0.01, math.nan, 0.02], "holm")
    assert holm.m == 2 and holm.p_adjusted[[0, 2]] == pytest.approx([0.02, 0.02])
    with pytest.raises(ValueError, match="valid: holm, bh, none"):
        adjust([0.1], "bonferroni")


def test_interval_levels():
    assert interval_level("none", 0.05, 9, 3) == pytest.approx(0.95)
    assert interval_level("holm", 0.05, 9, 3) == pytest.approx(1 - 0.05 / 9)  # Bonferroni
    assert interval_level("bh", 0.05, 9, 3) == pytest.approx(1 - 3 * 0.05 / 9)  # Benjamini-Yekutieli
    assert interval_level("bh", 0.05, 9, 0) == pytest.approx(1 - 0.05 / 9)
    assert adjust(BH_1995, "bh").level == pytest.approx(1 - 4 * 0.05 / 15)


def test_paired_p_value_is_scipys_ttest_rel():
    rng = np.random.default_rng(1)
    for n in (2, 3, 5, 10):
        arm, base = rng.normal(0.3, 0.05, n), rng.normal(0.32, 0.05, n)
        test = paired_test(arm - base)
        ref = stats.ttest_rel(arm, base)
        assert test.p == pytest.approx(ref.pvalue) and test.n == n
        assert test.half == pytest.approx(stats.t.ppf(0.975, n - 1) * np.std(arm - base, ddof=1) / math.sqrt(n))
        assert test.half_at(0.99) > test.half
        # the 95% interval excludes 0 exactly when p < 0.05
        assert (abs(test.mean) > test.half) == (test.p < 0.05)


def test_paired_test_without_spread_or_pairs():
    assert paired_test([0.01, 0.01, 0.01]).p == 0.0 and paired_test([0.0, 0.0]).p == 1.0
    one = paired_test([0.3, math.nan])
    assert one.n == 1 and math.isnan(one.p) and math.isnan(one.half)
    assert direction(-1.0, True) == "lower" and direction(1.0, True) == "higher" and direction(-1.0, False) == ""


def test_adjusted_interval_of_a_rejected_test_excludes_zero():
    """Compatibility: Bonferroni intervals that exclude 0 are Holm rejections; BH rejections have
    Benjamini-Yekutieli intervals that exclude 0."""
    rng = np.random.default_rng(2)
    tests = [paired_test(rng.normal(shift, 1.0, 5)) for shift in (0.0, 0.5, 1.5, 3.0, 4.0, -2.5)]
    p = [t.p for t in tests]
    holm, bh = adjust(p, "holm"), adjust(p, "bh")
    for t, rejected in zip(tests, holm.rejected):
        if abs(t.mean) > t.half_at(holm.level):
            assert rejected
    for t, rejected in zip(tests, bh.rejected):
        if rejected:
            assert abs(t.mean) > t.half_at(bh.level)
