"""Is a difference between two configs real? Does a recipe reach a target? Welch's interval for a
difference of means over seeds; the paired interval where both sides ran the same seeds (a seed
fixes the init, the data order and every augmentation draw, so the seed's own luck cancels in
the per-seed difference); the one-sided one-sample t-test with which speed records are claimed
("mean >= 94% over n runs"); and how many seeds would resolve each: what `compare --baseline`,
`ablate`, `--seeds N --target_acc` and `bench --target_acc` report. The distributions are
scipy's.

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
    """mean(b) - mean(a), with a 95% interval and two-sided p-value (Welch's, or paired's)."""

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
    diff, se = float(b.mean() - a.mean()), math.sqrt(va + vb)
    if se == 0:  # identical values on both sides: the difference is exact
        return Difference(diff, diff, diff, 1.0 if diff == 0 else 0.0, len(a), len(b), math.inf)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + confidence / 2, df) * se
    p = 2 * stats.t.sf(abs(diff) / se, df)
    return Difference(
        diff, float(diff - half), float(diff + half), float(p), len(a), len(b), float(df)
    )


@dataclass(frozen=True)
class Paired(Difference):
    """mean(b - a) over the seeds both sides ran: the paired t interval (df n-1), and how
    closely the two sides move together over seeds (Pearson's r; None without spread)."""

    correlation: float | None = None


def paired(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Paired:
    """The paired t interval for mean(b - a); a[i] and b[i] are one seed's results."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) != len(b) or len(a) < MIN_SEEDS:
        raise ValueError(
            f"a paired interval needs the same {MIN_SEEDS}+ seeds on both sides "
            f"(got {len(a)} and {len(b)})"
        )
    d, n = b - a, len(a)
    r = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else None
    diff, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(n))
    if se == 0:  # every seed moved by the same amount: the difference is exact
        return Paired(diff, diff, diff, 1.0 if diff == 0 else 0.0, n, n, n - 1, r)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * se
    p = 2 * stats.t.sf(abs(diff) / se, n - 1)
    return Paired(diff, float(diff - half), float(diff + half), float(p), n, n, float(n - 1), r)


@dataclass(frozen=True)
class Reach:
    """Does the mean reach `target`? The one-sided one-sample t-test of mean > target."""

    mean: float
    std: float
    n: int
    target: float
    t: float
    p_value: float  # one-sided: small when the mean is above the target
    seeds_needed: int | None  # for p < 0.05 at 80% power, at the observed mean and spread


def reaches(values: Sequence[float], target: float, alpha: float = 0.05) -> Reach:
    """The one-sided one-sample t-test that the mean of `values` exceeds `target` (as speed
    records are claimed: the later public speedrun, 2000 runs, p=0.0034 against 94%)."""
    x = np.asarray(values, dtype=float)
    if len(x) < MIN_SEEDS:
        raise ValueError(f"a test against a target needs {MIN_SEEDS} or more runs (got {len(x)})")
    mean, std = float(x.mean()), float(x.std(ddof=1))
    if std == 0:
        t, p = (math.inf, 0.0) if mean > target else (-math.inf if mean < target else 0.0, 1.0)
    else:
        t = (mean - target) / (std / math.sqrt(len(x)))
        p = float(stats.t.sf(t, len(x) - 1))
    need = (
        seeds_needed(mean - target, std, alpha=alpha, sides=1, samples=1) if mean > target else None
    )
    return Reach(mean, std, len(x), target, float(t), p, need)


def seeds_needed(
    d: float,
    std: float,
    power: float = 0.8,
    alpha: float = 0.05,
    most: int = 10_000,
    sides: int = 2,
    samples: int = 2,
) -> int | None:
    """Seeds for a t-test at level alpha to detect a true difference d with the given power
    (the exact power, from the noncentral t distribution). samples=2: a two-sample test, per
    config, each config's runs spreading with std; samples=1: a one-sample test (a paired
    design, std the spread of the per-seed differences; or a mean against a target). sides: a
    two-sided or one-sided test. None when d is 0 or more than `most` are needed."""
    if d == 0:
        return None
    if std <= 0:
        return MIN_SEEDS
    for n in range(MIN_SEEDS, most + 1):
        df, se = (
            (2 * n - 2, std * math.sqrt(2 / n)) if samples == 2 else (n - 1, std / math.sqrt(n))
        )
        ncp = abs(d) / se
        crit = stats.t.ppf(1 - alpha / sides, df)
        achieved = stats.nct.sf(crit, df, ncp) + (
            stats.nct.cdf(-crit, df, ncp) if sides == 2 else 0
        )
        if achieved >= power:
            return n
    return None


def pooled_std(a: Sequence[float], b: Sequence[float]) -> float:
    """The two sides' common std, from their sample variances."""
    va, vb = np.var(a, ddof=1), np.var(b, ddof=1)
    return float(math.sqrt(((len(a) - 1) * va + (len(b) - 1) * vb) / (len(a) + len(b) - 2)))


def summarize(base, other) -> dict:
    """One row of a table: the difference other - base with Welch's interval and p-value (ci_low,
    ci_high, p_value), n a side, and the seeds per config that would resolve a difference of the
    observed size at 80% power. Given as seed -> value mappings (pandas Series indexed by seed)
    whose seeds are the same on both sides, the paired interval too (paired_ci_low,
    paired_ci_high, paired_p_value, correlation; design "paired"), and seeds_needed from the
    per-seed differences' spread; otherwise design "unpaired"."""
    d = welch(list(_values(base)), list(_values(other)))
    row = {
        "diff": d.diff,
        "ci_low": d.low,
        "ci_high": d.high,
        "p_value": d.p_value,
        "n_base": d.n_a,
        "n": d.n_b,
        "design": "unpaired",
        "seeds_needed": seeds_needed(d.diff, pooled_std(_values(base), _values(other))),
    }
    seeds = same_seeds(base, other)
    if seeds:
        a, b = np.asarray([base[s] for s in seeds]), np.asarray([other[s] for s in seeds])
        p = paired(a, b)
        spread = float(np.std(b - a, ddof=1))
        row.update(
            paired_ci_low=p.low,
            paired_ci_high=p.high,
            paired_p_value=p.p_value,
            correlation=p.correlation,
            design="paired",
            seeds_needed=seeds_needed(p.diff, spread, samples=1),
        )
    return row


def same_seeds(base, other) -> list | None:
    """The seeds of two seed -> value mappings (dicts, or Series indexed by seed) when both hold
    the same ones, each once, and at least MIN_SEEDS; else None (an unpaired design)."""
    maps = [dict(x.items()) if hasattr(x, "items") else None for x in (base, other)]
    if any(m is None for m in maps) or any(len(m) != len(x) for m, x in zip(maps, (base, other))):
        return None
    if set(maps[0]) != set(maps[1]) or len(maps[0]) < MIN_SEEDS:
        return None
    return sorted(maps[0])


def _values(x) -> np.ndarray:
    return np.asarray(list(x.values()) if isinstance(x, dict) else list(x), dtype=float)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """The t interval of a mean over seeds; (nan, nan) below MIN_SEEDS values."""
    x = _values(values)
    if len(x) < MIN_SEEDS:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def upper_bound(values: Sequence[float], alpha: float = 0.05) -> float:
    """The one-sided (1 - alpha) upper confidence bound on a mean over seeds: below a floor, the
    mean is shown to miss it at level alpha. inf below MIN_SEEDS values."""
    x = _values(values)
    if len(x) < MIN_SEEDS:
        return math.inf
    return float(x.mean() + stats.t.ppf(1 - alpha, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
