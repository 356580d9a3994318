import math

import pytest

from backend.domain.model import Outcome
from backend.domain.rewards import log_growth_reward, seed_reward


def outcome(pnl_pct, duration_hours=0.0, dd=0.0, pnl_usd=None, equity=10_000.0):
    return Outcome(pnl_usd=pnl_pct if pnl_usd is None else pnl_usd, pnl_pct=pnl_pct,
                   duration_hours=duration_hours, max_drawdown_pct=dd, equity_at_entry=equity)


def test_seed_reward_matches_the_seed_worked_example():
    # seed 001: 2.37 - (4.5/24)*0.01 - 0.8*0.5 + 0.1 = 2.068
    assert seed_reward(outcome(2.37, 4.5, 0.8)) == pytest.approx(2.37 - 4.5 / 24 * 0.01 - 0.4 + 0.1)
    assert seed_reward(outcome(-1.0, 48, 2.0)) == pytest.approx(-1.0 - 0.02 - 1.0)


def test_log_growth_is_the_log_equity_ratio():
    assert log_growth_reward(outcome(5, pnl_usd=500, equity=10_000)) == pytest.approx(100 * math.log(1.05))
    assert log_growth_reward(outcome(-5, pnl_usd=-10_000, equity=10_000)) == -1000.0  # ruin is finite


def _expected_rewards(leverage: int) -> tuple[float, float]:
    """A trade with an edge: +40% (p=0.6) or -20% at the stop (p=0.4), on 0.6 x equity of margin."""
    equity, margin = 10_000.0, 6_000.0
    seed = log = 0.0
    for p, price_return in ((0.6, 0.40), (0.4, -0.20)):
        pnl_usd = margin * leverage * price_return
        o = outcome(100 * pnl_usd / margin, 24, 100 * max(0.0, -pnl_usd) / margin, pnl_usd, equity)
        seed += p * seed_reward(o)
        log += p * log_growth_reward(o)
    return seed, log


def test_seed_reward_prefers_maximum_leverage_log_growth_does_not():
    by_leverage = {lev: _expected_rewards(lev) for lev in range(1, 6)}
    seed_best = max(by_leverage, key=lambda lev: by_leverage[lev][0])
    log_best = max(by_leverage, key=lambda lev: by_leverage[lev][1])
    assert seed_best == 5  # linear in leverage: more is always "better"
    assert log_best == 3  # the Kelly optimum (exposure 2x equity here) lies inside the range
    assert by_leverage[5][1] < by_leverage[3][1]
