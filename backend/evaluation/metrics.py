"""Performance metrics of one daily track, pure numpy: every policy and baseline is scored by `score`.

Conventions: `equity` holds the account value at each bar's close (first value: the start), so there are
len(equity) - 1 daily returns; the risk-free rate is 0 (cash earns nothing in these simulations); a year is
252 bars. Turnover is the average daily traded value / equity (buys plus sells), as seed 004 reports it.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import kurtosis, norm, skew

YEAR = 252
EULER_GAMMA = 0.5772156649015329


def returns(equity: np.ndarray) -> np.ndarray:
    e = np.asarray(equity, dtype=float)
    return e[1:] / e[:-1] - 1


def sharpe(r: np.ndarray, periods: int = YEAR) -> float:
    """Annualised Sharpe ratio: mean / sample stdev x sqrt(periods); 0 for a flat track."""
    sd = np.std(r, ddof=1) if len(r) > 1 else 0.0
    return float(np.mean(r) / sd * math.sqrt(periods)) if sd > 1e-15 else 0.0


def sortino(r: np.ndarray, periods: int = YEAR) -> float:
    """Annualised Sortino ratio: mean / downside deviation (root mean square of the negative returns)."""
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2))) if len(r) else 0.0
    return float(np.mean(r) / downside * math.sqrt(periods)) if downside > 1e-15 else 0.0


def max_drawdown(equity: np.ndarray) -> float:
    e = np.asarray(equity, dtype=float)
    return float(np.max(1 - e / np.maximum.accumulate(e)))


def annual_return(equity: np.ndarray, periods: int = YEAR) -> float:
    growth = equity[-1] / equity[0]
    return float(growth ** (periods / (len(equity) - 1)) - 1) if growth > 0 else -1.0


def expected_max_sharpe(trials_variance: float, n_trials: int) -> float:
    """E[max SR] of n_trials strategies with no edge whose Sharpe estimates have this variance (Bailey and
    Lopez de Prado 2014, eq. for SR_0); 0 for a single trial."""
    if n_trials < 2:
        return 0.0
    return math.sqrt(trials_variance) * ((1 - EULER_GAMMA) * norm.ppf(1 - 1 / n_trials)
                                         + EULER_GAMMA * norm.ppf(1 - 1 / (n_trials * math.e)))


def deflated_sharpe(sr: float, n_obs: int, skewness: float, kurt: float, trials_variance: float,
                    n_trials: int) -> float:
    """Probability that the true per-period Sharpe exceeds the best of n_trials no-edge strategies.

    sr is per period (not annualised), kurt is the raw (non-excess) kurtosis, trials_variance the variance of
    the per-period Sharpe estimates of every configuration tried."""
    sr0 = expected_max_sharpe(trials_variance, n_trials)
    denom = 1 - skewness * sr + (kurt - 1) / 4 * sr ** 2
    return float(norm.cdf((sr - sr0) * math.sqrt(n_obs - 1) / math.sqrt(max(denom, 1e-12))))


def deflated_sharpe_of(r: np.ndarray, trial_sharpes: list[float]) -> float:
    """DSR of a return series given the per-period Sharpe ratios of every configuration tried (itself
    included)."""
    sd = np.std(r, ddof=1)
    if len(r) < 3 or sd < 1e-15:
        return 0.0
    return deflated_sharpe(float(np.mean(r) / sd), len(r), float(skew(r)), float(kurtosis(r, fisher=False)),
                           float(np.var(trial_sharpes, ddof=1)) if len(trial_sharpes) > 1 else 0.0,
                           len(trial_sharpes))


def per_period_sharpe(equity: np.ndarray) -> float:
    return sharpe(returns(equity), periods=1)


def score(equity: np.ndarray, exposure: np.ndarray, turnover: np.ndarray, periods: int = YEAR) -> dict[str, float]:
    """Every metric that depends on one track alone (DSR, Kelly ratio and rank need the others: see
    walkforward.score_window). `periods`: bars per year (252 daily bars; intraday bars have more)."""
    r = returns(equity)
    mdd = max_drawdown(equity)
    ann = annual_return(equity, periods)
    return {
        "total_return": float(equity[-1] / equity[0] - 1),
        "annual_return": ann,
        "sharpe": sharpe(r, periods),
        "sortino": sortino(r, periods),
        "max_drawdown": mdd,
        "calmar": ann / mdd if mdd > 1e-12 else 0.0,
        "turnover": float(np.mean(turnover)) if len(turnover) else 0.0,
        "avg_exposure": float(np.mean(exposure)) if len(exposure) else 0.0,
        "log_growth": float(math.log(max(equity[-1] / equity[0], 1e-12))),
        "days": int(len(r)),
    }
