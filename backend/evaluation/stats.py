"""Comparing two sizing policies: paired and Welch's t, bootstrap intervals, and the sample a test needs.

A paired comparison (backtests: the same signal sized by each policy) tests the mean of the per-signal
differences; an unpaired one (live A/B: each signal sized by one arm only) tests the difference of two means
with Welch's t, which does not assume the arms' variances equal. Both report a two-sided p-value, a t interval
and a percentile bootstrap interval (seeded: the same data give the same interval).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.stats import norm, t as student

BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class Difference:
    """An estimated difference of means (b - a, or the mean of paired differences) and how sure it is."""

    n: int  # paired: the pairs; Welch: both samples together
    mean: float
    t: float | None  # None: no spread at all (every difference the same)
    df: float
    p_value: float
    ci: tuple[float, float]  # t interval
    bootstrap_ci: tuple[float, float]

    def as_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "t": self.t, "df": self.df, "p_value": self.p_value,
                "ci": list(self.ci), "bootstrap_ci": list(self.bootstrap_ci)}


def _t_test(mean: float, se: float, df: float, level: float) -> tuple[float | None, float, tuple[float, float]]:
    """(t, two-sided p, interval) of an estimate with this standard error. A zero standard error (every value
    equal) has no t; p is 1 when the estimate is 0, else 0."""
    if se == 0:
        return None, 1.0 if mean == 0 else 0.0, (mean, mean)
    t = mean / se
    half = student.ppf((1 + level) / 2, df) * se
    return t, float(2 * student.sf(abs(t), df)), (mean - half, mean + half)


def _percentile_interval(estimates: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(estimates, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired(a: Sequence[float], b: Sequence[float], level: float = 0.95, seed: int = 0,
           resamples: int = BOOTSTRAP_RESAMPLES) -> Difference | None:
    """b - a, pair by pair (None with fewer than two pairs). The bootstrap resamples the pairs."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    n = len(d)
    if n < 2:
        return None
    mean = float(d.mean())
    t, p, ci = _t_test(mean, float(d.std(ddof=1)) / math.sqrt(n), n - 1, level)
    rows = np.random.default_rng(seed).integers(0, n, (resamples, n))
    return Difference(n, mean, t, n - 1, p, ci, _percentile_interval(d[rows].mean(axis=1), level))


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95, seed: int = 0,
          resamples: int = BOOTSTRAP_RESAMPLES) -> Difference | None:
    """mean(b) - mean(a) of two independent samples (None unless each has two values or more); degrees of
    freedom by Welch-Satterthwaite. The bootstrap resamples each sample on its own."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or len(y) < 2:
        return None
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1)) if se > 0 else len(x) + len(y) - 2.0
    mean = float(y.mean() - x.mean())
    t, p, ci = _t_test(mean, se, df, level)
    rng = np.random.default_rng(seed)
    boot = (y[rng.integers(0, len(y), (resamples, len(y)))].mean(axis=1)
            - x[rng.integers(0, len(x), (resamples, len(x)))].mean(axis=1))
    return Difference(len(x) + len(y), mean, t, float(df), p, ci, _percentile_interval(boot, level))


def trades_for_power(effect: float, sd_a: float, sd_b: float, share_b: float, alpha: float = 0.05,
                     power: float = 0.8) -> float:
    """Trades in all (both arms together, share_b of them in arm b) for a two-sided test at `alpha` to detect
    a true difference `effect` of the means with probability `power` (the normal approximation):
    n = (z_(1-alpha/2) + z_power)^2 (sd_a^2 / (1 - share_b) + sd_b^2 / share_b) / effect^2. No effect: inf."""
    if effect == 0:
        return math.inf
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    return z * z * (sd_a**2 / (1 - share_b) + sd_b**2 / share_b) / effect**2
