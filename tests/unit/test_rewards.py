import math

import pytest

from backend.config import load_settings
from backend.domain.model import Outcome, Side, TradePath
from backend.domain.rewards import RUIN, counterfactual_rewards, log_growth_reward, reward_of, shaped_pnl_reward

EQUITY = 10_000.0
MAINTENANCE = 0.25
# a long stopped out: in at 100, the bar after traded down to 95, the stop filled at 96; 10 bps of commissions
STOPPED = TradePath(Side.BUY, entry_price=100.0, exit_price=96.0, worst_price=95.0, cost_rate=0.001,
                    duration_hours=48.0)
# a short that reached its target: in at 50, up to 52 first, out at 45; no costs
SHORT = TradePath(Side.SELL, entry_price=50.0, exit_price=45.0, worst_price=52.0, cost_rate=0.0, duration_hours=24.0)


def test_shaped_pnl_reward_matches_the_seed_worked_example():
    # seed 001: 2.37 - (4.5/24)*0.01 - 0.8*0.5 + 0.1 = 2.068
    o = Outcome(exposure=1.0, pnl_usd=237.0, pnl_pct=2.37, duration_hours=4.5, max_drawdown_pct=0.8,
                equity_at_entry=EQUITY, trade_return=0.0237)
    assert shaped_pnl_reward(o) == pytest.approx(2.37 - 4.5 / 24 * 0.01 - 0.4 + 0.1)


def test_a_setting_of_its_former_name_seed_selects_shaped_pnl(monkeypatch):
    monkeypatch.setenv("RL_SIZING_REWARD", "seed")  # a .env written before the rename
    assert load_settings(_env_file=None).sizing.reward == "shaped_pnl"


def test_every_exposure_of_a_stopped_out_trade_by_hand():
    menu = [0.0, 0.5, 1.0, 3.0, 4.0]
    log = counterfactual_rewards(STOPPED, menu, EQUITY, log_growth_reward, MAINTENANCE)
    assert log[0] == 0.0  # a skip earns nothing
    assert log[1] == pytest.approx(100 * math.log(1 - 0.5 * 0.041))  # the stop's -4% and 0.1% costs
    assert log[2] == pytest.approx(100 * math.log(1 - 0.041))
    # 3x: equity at the worst price 1 - 3 x 5% = 0.85 stays above 25% of the position (0.25 x 3 x 0.95 = 0.71)
    assert log[3] == pytest.approx(100 * math.log(1 - 3 * 0.041))
    # 4x: 1 - 4 x 5% = 0.80 < 0.25 x 4 x 0.95 = 0.95: a margin call, liquidated at the worst price, not the stop
    assert log[4] == pytest.approx(100 * math.log(1 - 4 * 0.051))
    assert STOPPED.outcome(4.0, EQUITY, MAINTENANCE).liquidated and not STOPPED.outcome(3.0, EQUITY, MAINTENANCE).liquidated

    shaped = counterfactual_rewards(STOPPED, menu, EQUITY, shaped_pnl_reward, MAINTENANCE)
    # pnl% and drawdown% on margin: the same for every exposure up to 1x (leverage 1), then x exposure
    assert shaped[1] == shaped[2] == pytest.approx(-4.1 - 48 / 24 * 0.01 - 0.5 * 5.0)
    assert shaped[3] == pytest.approx(3 * -4.1 - 0.02 - 0.5 * 3 * 5.0)
    assert shaped[0] == 0.0


def test_a_short_that_hit_its_target_and_the_exposure_a_spike_would_have_liquidated():
    assert SHORT.outcome(2.0, EQUITY, MAINTENANCE).pnl_usd == pytest.approx(2 * EQUITY * 0.10)
    assert not SHORT.outcome(2.0, EQUITY, MAINTENANCE).liquidated  # 1 - 2 x 4% = 0.92 > 0.25 x 2 x 1.04 = 0.52
    liquidated = SHORT.outcome(8.0, EQUITY, MAINTENANCE)  # 1 - 8 x 4% = 0.68 < 0.25 x 8 x 1.04 = 2.08
    assert liquidated.liquidated and liquidated.pnl_usd == pytest.approx(-0.32 * EQUITY)
    assert liquidated.won  # the path won; this size of it would not have lived to see it
    assert log_growth_reward(liquidated) == pytest.approx(100 * math.log(0.68))


def test_ruin_is_the_worst_reward_and_finite():
    crash = TradePath(Side.BUY, 100.0, 40.0, 40.0, 0.0, 24.0)
    o = crash.outcome(3.0, EQUITY, None)
    assert o.pnl_usd == -EQUITY and log_growth_reward(o) == RUIN


def test_a_realised_trade_is_read_without_margin_calls():
    o = STOPPED.outcome(4.0, EQUITY, None)
    assert not o.liquidated and o.pnl_usd == pytest.approx(4 * EQUITY * -0.041)
    assert o.pnl_pct == pytest.approx(4 * -4.1) and o.max_drawdown_pct == pytest.approx(4 * 5.0)
    assert reward_of(STOPPED.outcome(0.0, EQUITY, MAINTENANCE), shaped_pnl_reward) == 0.0


def test_expected_shaped_pnl_reward_grows_with_exposure_while_log_growth_peaks_at_kelly():
    """A trade with an edge: +40% (p=0.6) or -20% at the stop (p=0.4). Kelly: f* = 0.6/0.2 - 0.4/0.4 = 2."""
    menu = [0.5, 1.0, 1.6, 2.0, 2.5, 3.15, 3.5]
    win = TradePath(Side.BUY, 100.0, 140.0, 100.0, 0.0, 24.0)
    loss = TradePath(Side.BUY, 100.0, 80.0, 80.0, 0.0, 24.0)

    def expected(fn):
        return [0.6 * w + 0.4 * lo for w, lo in zip(counterfactual_rewards(win, menu, EQUITY, fn, MAINTENANCE),
                                                    counterfactual_rewards(loss, menu, EQUITY, fn, MAINTENANCE))]

    shaped, log = expected(shaped_pnl_reward), expected(log_growth_reward)
    assert shaped[0] == shaped[1] and shaped[-1] == max(shaped)  # flat up to 1x, then more is always "better"
    assert menu[log.index(max(log))] == 2.0 and log[-1] < log[4] < log[3]
