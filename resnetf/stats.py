"""Is a difference between two configs real? Welch's interval for a difference of means over
seeds, its p-value, and how many seeds would resolve a difference: what `compare --baseline`
and `ablate` report. The distributions are scipy's.

The effects chased in speed runs are tenths of a point, and one config's spread over seeds is of
the same size (airbench94 on the JPEG set: std 0.19 points, n=10): a difference without its
interval says little.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_SEEDS = 2  # an interval needs a spread on each side


@dataclass(frozen=True)
class Difference:
    """mean(b) - mean(a), with Welch's 95% interval and two-sided p-value."""

    diff: float
    low: float
    high: float
    p_value: float
    n_a: int
    n_b: int
    df: float

    @property
    def resolved(self) -> bool:
        """The interval excludes zero."""
        return self.low > 0 or self.high < 0


def welch(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Difference:
    """Welch's t interval for mean(b) - mean(a) (unequal variances, Welch-Satterthwaite degrees
    of freedom); both sides need MIN_SEEDS values."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if min(len(a), len(b)) < MIN_SEEDS:
        raise ValueError(
            f"an interval needs at least {MIN_SEEDS} seeds a side (got {len(a)} and {len(b)})"
        )
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff, se = b.mean() - a.mean(), math.sqrt(va + vb)
    if se == 0:  # identical values on both sides: the difference is exact
        return Difference(diff, diff, diff, 1.0 if diff == 0 else 0.0, len(a), len(b), math.inf)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + confidence / 2, df) * se
    p = 2 * stats.t.sf(abs(diff) / se, df)
    return Difference(diff, diff - half, diff + half, float(p), len(a), len(b), float(df))


def seeds_needed(
    d: float, std: float, power: float = 0.8, alpha: float = 0.05, most: int = 10_000
) -> int | None:
    """Seeds per config for a two-sided two-sample t-test at level alpha to detect a true
    difference d with the given power, when each config's runs spread with std (the exact
    power, from the noncentral t distribution). None when d is 0 or more than `most` are
    needed."""
    if d == 0:
        return None
    if std <= 0:
        return MIN_SEEDS
    for n in range(MIN_SEEDS, most + 1):
        df = 2 * n - 2
        ncp = abs(d) / (std * math.sqrt(2 / n))
        crit = stats.t.ppf(1 - alpha / 2, df)
        achieved = stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp)
        if achieved >= power:
            return n
    return None


def pooled_std(a: Sequence[float], b: Sequence[float]) -> float:
    """The two sides' common std, from their sample variances."""
    va, vb = np.var(a, ddof=1), np.var(b, ddof=1)
    return float(math.sqrt(((len(a) - 1) * va + (len(b) - 1) * vb) / (len(a) + len(b) - 2)))


def summarize(base: Sequence[float], other: Sequence[float]) -> dict:
    """One row of a table: the difference other - base, its interval, p-value, n a side, and the
    seeds per config that would resolve a difference of the observed size at 80% power."""
    d = welch(base, other)
    return {
        "diff": d.diff,
        "ci_low": d.low,
        "ci_high": d.high,
        "p_value": d.p_value,
        "n_base": d.n_a,
        "n": d.n_b,
        "seeds_needed": seeds_needed(d.diff, pooled_std(base, other)),
    }
