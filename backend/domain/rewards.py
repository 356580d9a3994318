"""Turning a closed trade into a reward.

`seed` is the predecessors' formula. It is linear in pnl% on the margin a trade commits, so with any
positive edge its expectation grows with leverage without bound: an agent maximising it learns to use the
highest leverage it is offered. `log_growth` is the change in log account equity over the trade: concave,
so its expectation peaks at the Kelly fraction and falls beyond it; over-leverage is punished by the reward
itself, not only by the caps.
"""
from __future__ import annotations

import math
from typing import Callable

from backend.domain.model import Outcome

RewardFn = Callable[[Outcome], float]


def seed_reward(o: Outcome) -> float:
    reward = o.pnl_pct
    reward -= (o.duration_hours / 24.0) * 0.01  # time penalty
    reward -= o.max_drawdown_pct * 0.5  # drawdown penalty
    if o.pnl_pct > 0:
        reward += 0.1  # win bonus
    return reward


def log_growth_reward(o: Outcome) -> float:
    """100 x ln(equity after / equity before): percent-like units, comparable to `seed`."""
    ratio = (o.equity_at_entry + o.pnl_usd) / o.equity_at_entry
    if ratio <= 0:  # the trade wiped the account out: the worst reward there is, but finite
        return -1000.0
    return 100.0 * math.log(ratio)


REWARDS: dict[str, RewardFn] = {"seed": seed_reward, "log_growth": log_growth_reward}
