"""Paired t tests and their adjustment for multiplicity.

A paired test (`paired_test`) reads the per-seed differences d_s = m(arm, s) - m(baseline, s):
their mean, the t interval of the mean with n - 1 degrees of freedom and the two-sided p-value of
"mean 0" (what `scipy.stats.ttest_rel` gives on the two columns). Differences that are all equal
have no spread: their interval is the point, p = 0 when it is not 0 and 1 when it is.

A family of tests is adjusted together (`adjust`), with statsmodels' `multipletests`:

- `holm`: Holm's step-down, controlling the family-wise error rate at alpha. Its intervals are the
  Bonferroni ones, at level 1 - alpha/m: simultaneous, compatible with the test (an interval that
  excludes 0 is always a Holm rejection) and conservative (Holm may reject where that interval
  still touches 0, never the other way round).
- `bh`: Benjamini-Hochberg, controlling the false discovery rate at alpha. Its intervals are
  Benjamini and Yekutieli's FCR-adjusted ones, at level 1 - R alpha/m with R the number rejected
  (alpha/m when R = 0); they bound the false coverage rate over the rejected (selected) tests, and
  an interval of a rejected test always excludes 0.
- `none`: each test alone at alpha, with the plain 1 - alpha interval.

m counts the tests that have a p-value (2 pairs or more); the others are left out of the family
and keep NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

ADJUSTMENTS = ("holm", "bh", "none")
STATSMODELS_METHOD = {"holm": "holm", "bh": "fdr_bh"}
ADJUSTMENT_WORDS = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": "no adjustment"}
INTERVAL_WORDS = {"holm": "Bonferroni (simultaneous, conservative)", "bh": "Benjamini-Yekutieli FCR-adjusted",
                  "none": "unadjusted"}


@dataclass(frozen=True)
class PairedTest:
    """One paired comparison: the mean of the per-seed differences, the half-width of its t
    interval at `level`, the number of pairs and the two-sided p-value (NaN for fewer than 2)."""

    mean: float
    half: float
    n: int
    p: float
    sd: float  # of the differences; what intervals at other levels are built from
    level: float = 0.95

    def half_at(self, level: float) -> float:
        """The half-width of the t interval at another level (NaN for fewer than 2 pairs)."""
        return t_half(self.sd, self.n, level)


def t_half(sd: float, n: int, level: float) -> float:
    """t_{(1+level)/2, n-1} * sd / sqrt(n); NaN for n < 2."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    return float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n))


def paired_test(differences: Iterable[float], level: float = 0.95) -> PairedTest:
    """The paired t test of the finite per-seed differences (see the module docstring)."""
    d = np.asarray([v for v in differences if v is not None], dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return PairedTest(math.nan, math.nan, 0, math.nan, math.nan, level)
    mean = float(d.mean())
    if n == 1:
        return PairedTest(mean, math.nan, 1, math.nan, math.nan, level)
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
    else:
        p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    return PairedTest(mean, t_half(sd, n, level), n, p, sd, level)


@dataclass(frozen=True)
class Adjusted:
    """A family's p-values adjusted together; arrays aligned with the p-values given."""

    method: str  # holm | bh | none
    alpha: float
    p: np.ndarray  # as given (NaN: not in the family)
    p_adjusted: np.ndarray
    rejected: np.ndarray  # bool; False where p is NaN
    m: int  # tests in the family
    level: float  # of the intervals that go with the adjusted p-values (see `interval_level`)

    @property
    def rejections(self) -> int:
        return int(self.rejected.sum())

    def describe(self) -> str:
        """'Holm over 9 tests, alpha 0.05; intervals: Bonferroni (simultaneous, conservative) 99.44%'."""
        tests = f"{self.m} test{'s' if self.m != 1 else ''}"
        return (f"{ADJUSTMENT_WORDS[self.method]} over {tests}, alpha {self.alpha:g}; intervals: "
                f"{INTERVAL_WORDS[self.method]} {format_level(self.level)}")


def format_level(level: float) -> str:
    """0.95 -> '95%', 0.99444 -> '99.44%'."""
    return f"{100 * level:.4g}%"


def interval_level(method: str, alpha: float, m: int, rejections: int) -> float:
    """The level of the intervals reported beside adjusted p-values (see the module docstring)."""
    _check(method, alpha)
    if method == "none" or m == 0:
        return 1 - alpha
    if method == "holm":
        return 1 - alpha / m
    return 1 - max(rejections, 1) * alpha / m  # bh: Benjamini-Yekutieli, R = 0 read as 1


def adjust(p_values: Sequence[float], method: str = "holm", alpha: float = 0.05) -> Adjusted:
    """Adjust the finite p-values of a family together (NaN ones stay out of it and stay NaN)."""
    _check(method, alpha)
    p = np.asarray(p_values, dtype=float)
    inside = np.isfinite(p)
    m = int(inside.sum())
    p_adjusted = np.full(p.shape, np.nan)
    rejected = np.zeros(p.shape, dtype=bool)
    if m and method == "none":
        p_adjusted[inside] = p[inside]
        rejected[inside] = p[inside] <= alpha
    elif m:
        reject, corrected, _, _ = multipletests(p[inside], alpha=alpha, method=STATSMODELS_METHOD[method])
        p_adjusted[inside], rejected[inside] = corrected, reject
    level = interval_level(method, alpha, m, int(rejected.sum()))
    return Adjusted(method, alpha, p, p_adjusted, rejected, m, level)


def direction(mean: float, rejected: bool) -> str:
    """'lower' / 'higher' for a rejected test, by the sign of the mean difference; else ''."""
    if not rejected or not math.isfinite(mean) or mean == 0:
        return ""
    return "lower" if mean < 0 else "higher"


def format_p(p: float) -> str:
    """Two significant digits below 0.01, three decimals above; '<0.0001' below that, '–' for none."""
    if not math.isfinite(p):
        return "–"
    if p < 1e-4:
        return "<0.0001"
    return f"{p:.2g}" if p < 0.01 else f"{p:.3f}"


def _check(method: str, alpha: float) -> None:
    if method not in ADJUSTMENTS:
        raise ValueError(f"unknown adjustment {method!r}; valid: {', '.join(ADJUSTMENTS)}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie between 0 and 1, got {alpha}")
