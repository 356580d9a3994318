"""The live A/B test's report (GET /v1/ab): each arm's closed trades, and whether the RL arm grows the account
faster than the control.

The primary metric is the log growth per signal, ln(equity after / equity before) of its trade: what Kelly
maximises, and what the agent is rewarded with. A signal its arm sized 0 counts, with growth 0: skipping is
a sizing decision, and leaving skips out would let an arm pick its trades. The arms are compared with Welch's t
(unpaired: each signal is sized by one arm only) and a bootstrap interval. Win rate and the R-multiple do not
depend on the size (the same trade wins at any size); the predecessors' t-test on R-multiples is reported too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

import numpy as np

from backend.domain.rewards import log_growth
from backend.evaluation import stats
from backend.evaluation.metrics import max_drawdown
from backend.sizing.ab import CONTROL, RL


@dataclass(frozen=True)
class ArmTrade:
    """A closed trade (or signal sized 0, followed without an order) of one arm."""

    arm: str
    closed_at: datetime
    equity: float  # at entry
    pnl: float
    risk: float | None  # what the stop would have lost as placed (quantity x |entry - stop|); None: sized 0

    @property
    def growth(self) -> float:
        return log_growth(self.equity, self.pnl)

    @property
    def r_multiple(self) -> float | None:
        return self.pnl / self.risk if self.risk else None

    @classmethod
    def of(cls, trade) -> "ArmTrade":
        """From a closed trade row."""
        risk = None if trade.shadow else trade.quantity * abs(trade.entry_price - trade.stop_price)
        return cls(trade.arm, trade.closed_at, trade.equity_at_entry, trade.pnl_usd, risk)


def _longest_underwater_days(times: list[datetime], track: np.ndarray) -> float:
    """The longest time from a peak of the track (its start included) to the first close back at it; a
    drawdown not recovered by the last close counts to it."""
    longest, peak, since, under = 0.0, track[0], times[0], False
    for t, value in zip(times[1:], track[1:]):
        if value < peak:
            under = True
            continue
        if under:
            longest = max(longest, (t - since).total_seconds() / 86400)
        peak, since, under = value, t, False
    return max(longest, (times[-1] - since).total_seconds() / 86400) if under else longest


def arm_summary(trades: list[ArmTrade]) -> dict:
    """One arm's figures. Its track is its own: equity multiplied by (1 + return) of each of its trades in the
    order they closed, as if it had traded alone."""
    placed = [t for t in trades if t.risk is not None]
    r = [t.r_multiple for t in placed if t.r_multiple is not None]
    growth = np.array([t.growth for t in trades])
    returns = np.expm1(growth)
    summary = {"signals": len(trades), "trades": len(placed),
               "win_rate": sum(t.pnl > 0 for t in placed) / len(placed) if placed else None,
               "avg_r_multiple": float(np.mean(r)) if r else None,
               "mean_log_growth": float(growth.mean()) if len(trades) else None,
               "max_drawdown": None, "sharpe": None, "recovery_days": None,
               "total_pnl": float(sum(t.pnl for t in trades))}
    if trades:
        track = np.exp(np.concatenate([[0.0], np.cumsum(growth)]))
        sd = returns.std(ddof=1) if len(trades) > 1 else 0.0
        summary.update(max_drawdown=max_drawdown(track), sharpe=float(returns.mean() / sd) if sd > 0 else None,
                       recovery_days=_longest_underwater_days([trades[0].closed_at, *(t.closed_at for t in trades)],
                                                              track))
    return summary


def verdict(difference: stats.Difference | None, alpha: float) -> str:
    if difference is None or difference.p_value >= alpha:
        return "not yet significant"
    return "RL ahead, significant" if difference.mean > 0 else "control ahead, significant"


def report(trades: Iterable[ArmTrade], alpha: float, power: float, seed: int) -> dict:
    """Both arms, the difference RL - control in mean log growth per signal (Welch's t and bootstrap intervals
    at 1 - alpha), the verdict, the trades still needed for `power` at the difference observed so far (None
    before there is one), and Welch's t on the R-multiples."""
    by_arm = {RL: [], CONTROL: []}
    for t in sorted(trades, key=lambda t: t.closed_at):
        by_arm[t.arm].append(t)
    growth = {arm: [t.growth for t in ts] for arm, ts in by_arm.items()}
    level = 1 - alpha
    difference = stats.welch(growth[CONTROL], growth[RL], level, seed)
    still_needed = None
    if difference is not None:
        n = len(growth[RL]) + len(growth[CONTROL])
        needed = stats.trades_for_power(difference.mean, float(np.std(growth[CONTROL], ddof=1)),
                                        float(np.std(growth[RL], ddof=1)), len(growth[RL]) / n, alpha, power)
        still_needed = max(0, math.ceil(needed) - n) if math.isfinite(needed) else None
    r = {arm: [t.r_multiple for t in ts if t.r_multiple is not None] for arm, ts in by_arm.items()}
    r_test = stats.welch(r[CONTROL], r[RL], level, seed)
    return {"arms": {arm: arm_summary(ts) for arm, ts in by_arm.items()},
            "log_growth_difference": difference.as_dict() if difference else None,
            "verdict": verdict(difference, alpha), "trades_still_needed": still_needed,
            "r_multiple_difference": r_test.as_dict() if r_test else None}
