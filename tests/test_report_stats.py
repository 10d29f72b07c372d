"""The report's statistics (suite/report/stats.py) against numbers computed by hand and by
scipy.stats' own tests, and the verdicts an interval gives against a tolerance."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from suite.report.stats import (
    HELD,
    NOT_HELD,
    UNDECIDED,
    Interval,
    above,
    below,
    combine,
    difference,
    mean_interval,
    median_interval,
    paired_interval,
    t_quantile,
    welch_interval,
    within,
)


def test_t_quantiles_are_the_tabled_ones():
    assert t_quantile(2) == pytest.approx(4.303, abs=5e-4)  # 3 seeds
    assert t_quantile(1) == pytest.approx(12.706, abs=5e-4)
    assert t_quantile(4) == pytest.approx(2.776, abs=5e-4)
    assert t_quantile(1e9) == pytest.approx(1.960, abs=5e-4)


def test_mean_interval_by_hand():
    iv = mean_interval([1.0, 2.0, 3.0])  # mean 2, s = 1, half width 4.303 / sqrt(3) = 2.484
    assert (iv.estimate, iv.n, iv.df, iv.how) == (2.0, 3, 2, "mean")
    assert iv.low == pytest.approx(2.0 - 2.4842, abs=1e-4) and iv.high == pytest.approx(2.0 + 2.4842, abs=1e-4)
    assert iv.text() == "+2.0 mm [-0.5, +4.5] (mean, n=3)"


@pytest.mark.parametrize("n, k", [(6, 1), (8, 1), (9, 2), (10, 2), (12, 3), (20, 6)])
def test_median_interval_is_the_sign_tests_order_statistics(n, k):
    """[x_(k), x_(n+1-k)]: k from the binomial by hand, e.g. n = 10: P(B <= 1) = 11/1024, so
    k = 2 covers 1 - 22/1024 = 97.9% and k = 3 only 1 - 112/1024 = 89.1%; n = 20 -> the 6th
    and 15th values (the usual table)."""
    values = [float(v) ** 2 for v in reversed(range(1, n + 1))]  # unsorted, unevenly spaced
    iv = median_interval(values)
    assert (iv.low, iv.high) == (float(k) ** 2, float(n + 1 - k) ** 2)
    assert iv.estimate == pytest.approx(np.median(values)) and iv.n == n and iv.how == "median"


def test_median_interval_needs_six_values_at_95_percent():
    iv = median_interval([3.0, 1.0, 2.0, 5.0, 4.0])  # the extremes of 5 cover 1 - 2/32 = 93.75%
    assert iv.estimate == 3.0 and not iv.known
    assert median_interval([3.0, 1.0, 2.0, 5.0, 4.0], level=0.9).low == 1.0
    assert not median_interval([]).known


def test_one_value_has_no_interval():
    iv = mean_interval([5.0])
    assert iv.estimate == 5.0 and not iv.known and math.isnan(iv.low)
    assert iv.text(sign=False) == "5.0 mm (mean, n=1, no interval)"
    assert mean_interval([]).n == 0 and mean_interval([]).text() == "no value"


def test_paired_interval_matches_scipy_ttest_rel():
    a = {0: 30.1, 1: 31.7, 2: 29.8, 3: 30.9}
    b = {0: 29.0, 1: 30.2, 2: 29.5, 3: 29.1, 7: 99.0}  # seed 7 has no partner: left out
    iv = paired_interval(a, b)
    ci = sps.ttest_rel([a[s] for s in range(4)], [b[s] for s in range(4)]).confidence_interval(0.95)
    assert (iv.how, iv.n) == ("paired", 4)
    assert iv.estimate == pytest.approx(np.mean([a[s] - b[s] for s in range(4)]))
    assert (iv.low, iv.high) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_welch_interval_matches_scipy_ttest_ind():
    a, b = [30.1, 31.7, 29.8], [29.0, 30.2, 29.5, 27.1, 28.8]
    iv = welch_interval(a, b)
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert iv.how == "unpaired" and iv.estimate == pytest.approx(np.mean(a) - np.mean(b))
    assert (iv.low, iv.high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    # Welch-Satterthwaite degrees of freedom by hand
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 5
    assert iv.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 4))
    assert not welch_interval([1.0], [2.0, 3.0]).known


def test_difference_pairs_only_when_the_seeds_agree():
    a, b = {0: 3.0, 1: 4.0, 2: 6.0}, {0: 1.0, 1: 2.5, 2: 3.0}
    assert difference(a, b).how == "paired"
    assert difference(a, b).estimate == pytest.approx(np.mean([2.0, 1.5, 3.0]))
    other = {0: 1.0, 1: 2.5, 3: 3.0}  # seed 3 instead of 2
    assert difference(a, other).how == "unpaired"
    assert difference(a, other).estimate == pytest.approx(np.mean([3, 4, 6]) - np.mean([1, 2.5, 3]))


def iv(low, high):
    return Interval((low + high) / 2, low, high, 3, "paired")


@pytest.mark.parametrize("low,high,under,over", [
    (0.5, 1.5, HELD, NOT_HELD),  # wholly below the tolerance 2
    (2.5, 3.0, NOT_HELD, HELD),  # wholly above it
    (1.5, 2.5, UNDECIDED, UNDECIDED),  # straddles the tolerance
])
def test_below_and_above(low, high, under, over):
    assert below(iv(low, high), 2.0) == under
    assert above(iv(low, high), 2.0) == over


def test_within_a_band():
    assert within(iv(-0.5, 0.5), -1.0, 1.0) == HELD
    assert within(iv(1.5, 2.0), -1.0, 1.0) == NOT_HELD and within(iv(-3.0, -2.0), -1.0, 1.0) == NOT_HELD
    assert within(iv(0.5, 1.5), -1.0, 1.0) == UNDECIDED


def test_no_interval_decides_nothing():
    none = Interval(1.0, math.nan, math.nan, 1, "paired")
    assert below(none, 2.0) == above(none, 0.0) == within(none, -5, 5) == UNDECIDED


def test_combine():
    assert combine([HELD, HELD]) == HELD
    assert combine([HELD, UNDECIDED]) == UNDECIDED
    assert combine([HELD, UNDECIDED, NOT_HELD]) == NOT_HELD
    assert combine([]) == UNDECIDED


def test_scales_without_a_passed_convergence_check_are_labelled():
    from suite.report.tables import not_converged

    assert not_converged("quick").startswith("Not converged: scale `quick`")
    assert not_converged("paper") == "" and not_converged(None) == ""
