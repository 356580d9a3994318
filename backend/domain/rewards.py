"""Turning a closed trade into rewards: for the size it had, and for every size it could have had.

`shaped_pnl` is the predecessors' formula (named `seed` before). It is linear in pnl% on the margin a trade
commits, so it sees leverage x return only: every exposure up to 1x earns it the same, and beyond 1x its
expectation grows with the exposure whenever the edge outweighs half the drawdown term. `log_growth` is the
change in log account equity over the trade: concave, so its expectation peaks at the Kelly exposure and falls
beyond it; over-leverage is punished by the reward itself, not only by the caps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from backend.domain.model import Outcome, TradePath

RewardFn = Callable[[Outcome], float]


@dataclass(frozen=True)
class Reward:
    """What a closed trade earned for the size it had, by the reward function named `fn`."""

    value: float
    fn: str
RUIN = -1000.0  # 100 x ln(e^-10): a wiped-out account's reward, the worst there is, but finite


def shaped_pnl_reward(o: Outcome) -> float:
    reward = o.pnl_pct
    reward -= (o.duration_hours / 24.0) * 0.01  # time penalty
    reward -= o.max_drawdown_pct * 0.5  # drawdown penalty
    if o.pnl_pct > 0:
        reward += 0.1  # win bonus
    return reward


def log_growth(equity: float, pnl: float) -> float:
    """ln(equity after / equity before) of a trade that made `pnl` on `equity`, never below RUIN / 100."""
    ratio = (equity + pnl) / equity
    return max(RUIN / 100, math.log(ratio)) if ratio > 0 else RUIN / 100


def log_growth_reward(o: Outcome) -> float:
    """100 x ln(equity after / equity before): percent-like units, comparable to `shaped_pnl`."""
    return 100.0 * log_growth(o.equity_at_entry, o.pnl_usd)


REWARDS: dict[str, RewardFn] = {"shaped_pnl": shaped_pnl_reward, "log_growth": log_growth_reward}
FORMER_NAMES = {"seed": "shaped_pnl"}  # still accepted in RL_SIZING_REWARD


def reward_of(outcome: Outcome, fn: RewardFn) -> float:
    """A trade sized 0 earns nothing, whatever the reward function."""
    return 0.0 if outcome.exposure == 0 else fn(outcome)


def counterfactual_rewards(path: TradePath, menu: Sequence[float], equity: float, fn: RewardFn,
                           maintenance: float) -> list[float]:
    """The reward each exposure of the menu would have earned on this trade's path, margin calls included."""
    return [reward_of(path.outcome(exposure, equity, maintenance), fn) for exposure in menu]
