"""The statistics every verdict rests on: a 95% Student-t interval of a mean, of a paired or
unpaired difference, and the verdict an interval gives against a tolerance.

    mean_interval(values)            mean ± t(n-1) s / sqrt(n)
    median_interval(values)          median, between the k-th smallest and k-th largest value
                                     (distribution-free: a sign test's binomial)
    paired_interval(a, b)            a - b over the seeds both have (dicts seed -> value)
    welch_interval(a, b)             mean(a) - mean(b), Welch-Satterthwaite degrees of freedom
    difference(a, b)                 paired when a and b have the same seeds, else Welch ("unpaired")
    below(iv, tol) / above(iv, tol)  held when the whole interval is on the claimed side of tol,
                                     did not hold when it is wholly on the other, else undecided
    within(iv, lo, hi)               held inside the band, did not hold wholly outside it
    combine(verdicts)                did not hold if any did not hold, held if all held, else undecided

An interval needs two values (two pairs); with fewer its ends are NaN and every verdict from
it is UNDECIDED.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
MIN_SEEDS = 3  # a cell with fewer seeds is flagged: its interval (if any) is too wide to decide much
HELD, NOT_HELD, UNDECIDED = "held", "did not hold", "undecided at this scale"


def t_quantile(df: float, level: float = LEVEL) -> float:
    """The two-sided Student-t quantile: t(0.975, 2) = 4.303 for a 95% interval of 3 values."""
    return float(stats.t.ppf(0.5 + level / 2, df))


@dataclass(frozen=True)
class Interval:
    """An estimate and its `level` interval; low/high are NaN when it has too few values."""

    estimate: float
    low: float
    high: float
    n: int  # values (or pairs) behind it; for Welch the smaller group
    how: str  # "mean", "paired" or "unpaired"
    df: float = math.nan
    level: float = LEVEL

    @property
    def known(self) -> bool:
        return bool(np.isfinite(self.low) and np.isfinite(self.high))

    def text(self, unit: str = "mm", sign: bool = True) -> str:
        """'+0.6 mm [-0.4, +1.6] (paired, n=3)'; without an interval 'n=1, no interval'."""
        def num(x: float) -> str:  # never '-0.0'
            return format(round(x, 1) + 0.0, "+.1f" if sign else ".1f")

        if not np.isfinite(self.estimate):
            return "no value"
        if not self.known:
            return f"{num(self.estimate)} {unit} ({self.how}, n={self.n}, no interval)"
        return f"{num(self.estimate)} {unit} [{num(self.low)}, {num(self.high)}] ({self.how}, n={self.n})"


def _interval(estimate: float, se: float, df: float, n: int, how: str, level: float) -> Interval:
    if not (np.isfinite(se) and df > 0):
        return Interval(estimate, math.nan, math.nan, n, how, df, level)
    half = t_quantile(df, level) * se
    return Interval(estimate, estimate - half, estimate + half, n, how, df, level)


def mean_interval(values: Iterable[float], level: float = LEVEL) -> Interval:
    """Mean and its t interval (n-1 degrees of freedom)."""
    x = np.asarray(list(values), dtype=float)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "mean", math.nan, level)
    se = x.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
    return _interval(float(x.mean()), se, n - 1, n, "mean", level)


def median_interval(values: Iterable[float], level: float = LEVEL) -> Interval:
    """Median and its distribution-free interval [x_(k), x_(n+1-k)] (sorted values, 1-based),
    k the largest with coverage 1 - 2 P(Binomial(n, 1/2) < k) >= level: with 6 to 8 values
    the smallest and largest (96.9% at n = 6), with 10 the second smallest and second largest
    (97.9%). Robust to a stray value (a timing round the machine disturbed). No interval under
    6 values at 95% (5 values' extremes cover 93.75%)."""
    x = np.sort(np.asarray(list(values), dtype=float))
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "median", math.nan, level)
    k = 0
    while k < n // 2 and 1 - 2 * stats.binom.cdf(k, n, 0.5) >= level:  # coverage with k + 1
        k += 1
    estimate = float(np.median(x))
    if k == 0:
        return Interval(estimate, math.nan, math.nan, n, "median", math.nan, level)
    return Interval(estimate, float(x[k - 1]), float(x[n - k]), n, "median", math.nan, level)


def paired_interval(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> Interval:
    """Mean of a[s] - b[s] over the seeds s both have, and its t interval."""
    common = sorted(set(a) & set(b))
    diff = mean_interval([a[s] - b[s] for s in common], level)
    return Interval(diff.estimate, diff.low, diff.high, diff.n, "paired", diff.df, level)


def welch_interval(a: Iterable[float], b: Iterable[float], level: float = LEVEL) -> Interval:
    """mean(a) - mean(b) with Welch's standard error and Welch-Satterthwaite degrees of freedom."""
    x, y = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    n = min(len(x), len(y))
    if not len(x) or not len(y):
        return Interval(math.nan, math.nan, math.nan, n, "unpaired", math.nan, level)
    estimate = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return Interval(estimate, math.nan, math.nan, n, "unpaired", math.nan, level)
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se2 = vx + vy
    if se2 == 0:
        return Interval(estimate, estimate, estimate, n, "unpaired", math.inf, level)
    df = se2 ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    return _interval(estimate, math.sqrt(se2), df, n, "unpaired", level)


def difference(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> Interval:
    """a - b (dicts seed -> value): paired by seed when both have the same seeds, else Welch."""
    if a and set(a) == set(b):
        return paired_interval(a, b, level)
    return welch_interval(a.values(), b.values(), level)


# -- verdicts -------------------------------------------------------------------------------------
def below(iv: Interval, tol: float) -> str:
    """Claim 'the quantity is below tol': held when the interval's upper end is below it,
    did not hold when its lower end is above it, else undecided."""
    if not iv.known:
        return UNDECIDED
    return HELD if iv.high < tol else (NOT_HELD if iv.low > tol else UNDECIDED)


def above(iv: Interval, tol: float) -> str:
    """Claim 'the quantity is above tol' (the mirror of `below`)."""
    if not iv.known:
        return UNDECIDED
    return HELD if iv.low > tol else (NOT_HELD if iv.high < tol else UNDECIDED)


def within(iv: Interval, lo: float, hi: float) -> str:
    """Claim 'the quantity lies in [lo, hi]': held when the whole interval does, did not hold
    when the whole interval lies outside, else undecided."""
    if not iv.known:
        return UNDECIDED
    if lo < iv.low and iv.high < hi:
        return HELD
    return NOT_HELD if iv.high < lo or iv.low > hi else UNDECIDED


def combine(verdicts: Iterable[str]) -> str:
    """A claim made of parts: did not hold if any part did not, held if every part held."""
    verdicts = list(verdicts)
    if NOT_HELD in verdicts:
        return NOT_HELD
    return HELD if verdicts and all(v == HELD for v in verdicts) else UNDECIDED
