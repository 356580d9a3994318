"""The whole loop on the real stores (SQLite file and the local PostgreSQL) and the simulated broker."""
from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest
from sqlalchemy import func, select

from backend.bootstrap import build_app
from backend.data.bundled import load_bundled
from backend.domain.model import Side, Signal
from backend.store.tables import OutcomeRow, SignalRow, TradeRow
from tests.conftest import make_settings

START = date(2008, 3, 3)


@pytest.fixture
def app(db_url):
    settings = make_settings(
        database_url=db_url, sim_start=START, rl_sizing_min_state_visits=0, rl_sizing_epsilon=0.0,
        rl_sizing_epsilon_min=0.0, rl_sizing_reward="seed", sim_slippage_bps=2, sim_commission_bps=1,
    )
    app = build_app(settings)
    yield app
    app.close()


def count(app, table) -> int:
    with app.store.session() as s:
        return s.scalar(select(func.count()).select_from(table))


def test_signal_to_reward_end_to_end(app):
    spx = load_bundled("SP500")
    i0 = app.broker.index
    result = app.executor.handle(Signal("sig-1", "SP500", Side.BUY, 0.8, time_limit_hours=72))
    assert result.status == "placed", result.reason
    trade = app.store.trade_for_signal("sig-1")
    # the decision's own keys are on the trade row
    assert trade.status == "pending" and trade.rl_state_key and trade.rl_action_key
    assert trade.rl_state_key == result.decision["state_key"] and trade.policy == "qlearning"
    assert trade.rl_state_key.endswith("|light|neutral")  # no positions yet, no outcomes yet

    app.advance_clock()  # fills at the next bar's open
    trade = app.store.trade_for_signal("sig-1")
    assert trade.status == "open"
    assert trade.entry_price == pytest.approx(spx.open[i0 + 1] * (1 + 2e-4))

    bars = 0
    while app.store.trade_for_signal("sig-1").status != "closed":
        app.advance_clock()
        bars += 1
        assert bars < 10, "the 72h time limit should close the trade within a few bars"
    trade = app.store.trade_for_signal("sig-1")
    exit_i = app.broker.index

    # every figure recomputed here from the raw bars
    qty, entry = trade.quantity, trade.entry_price
    if trade.exit_reason == "stop":
        assert trade.exit_price < entry
    else:
        assert trade.exit_reason == "time_limit"
        assert trade.exit_price == pytest.approx(spx.open[exit_i] * (1 - 2e-4))
    commissions = (entry + trade.exit_price) * qty * 1e-4
    pnl = (trade.exit_price - entry) * qty - commissions
    margin = qty * entry / trade.leverage
    worst = min(spx.low[i0 + 1:exit_i].min(), trade.exit_price)
    mae = max(0.0, (entry - worst) * qty / margin * 100)
    (outcome,) = app.store.outcomes(0, 10)[1]
    assert outcome.trade_id == trade.id
    assert outcome.pnl_usd == pytest.approx(pnl, rel=1e-9)
    assert outcome.pnl_pct == pytest.approx(100 * pnl / margin, rel=1e-9)
    assert outcome.max_drawdown_pct == pytest.approx(mae, rel=1e-9)
    assert outcome.duration_hours == pytest.approx(24 * (spx.ts[exit_i] - spx.ts[i0 + 1]).astype(int) / 86400)
    expected_reward = outcome.pnl_pct - outcome.duration_hours / 24 * 0.01 - 0.5 * mae + (0.1 if pnl > 0 else 0)
    assert outcome.reward == pytest.approx(expected_reward, rel=1e-9)

    # the Q-table learned exactly this reward in exactly this cell: Q = 0 + alpha (r - 0)
    (cell,) = app.store.q_values(trade.rl_state_key, 0, 100)[1]
    assert cell.action_key == trade.rl_action_key and cell.visits == 1
    assert cell.q == pytest.approx(0.15 * expected_reward)
    agent = app.store.agent()
    assert agent.total_updates == 1 and agent.last_updated_at is not None
    assert app.broker.positions() == []


def test_replayed_signal_places_nothing_and_replayed_close_rewards_once(app):
    first = app.executor.handle(Signal("sig-r", "NASDAQ", Side.SELL, 0.6, time_limit_hours=24))
    again = app.executor.handle(Signal("sig-r", "NASDAQ", Side.SELL, 0.6, time_limit_hours=24))
    assert first.status == again.status == "placed" and again.replayed and again.trade_id == first.trade_id
    assert count(app, TradeRow) == 1 and count(app, SignalRow) == 1
    fills = app.advance_clock()
    assert len(fills) == 1  # one order reached the broker
    exit_fills = []
    while not exit_fills:
        exit_fills = [f for f in app.advance_clock() if f.side is Side.BUY]
    trade = app.store.trade_for_signal("sig-r")
    assert trade.status == "closed"
    q_before = app.store.q_values(trade.rl_state_key, 0, 100)[1][0].q

    # the broker delivers the same close event twice (a redelivered stream message, a restart...)
    assert app.monitor.close(trade, exit_fills[0]) is False
    app.monitor.on_fill(exit_fills[0])
    assert count(app, OutcomeRow) == 1
    (cell,) = app.store.q_values(trade.rl_state_key, 0, 100)[1]
    assert cell.visits == 1 and cell.q == q_before
    assert app.store.agent().total_updates == 1


def test_same_side_signal_is_refused_and_opposite_signal_closes(app):
    assert app.executor.handle(Signal("a", "SP500", Side.BUY, 0.7)).status == "placed"
    app.advance_clock()
    same = app.executor.handle(Signal("b", "SP500", Side.BUY, 0.9))
    assert same.status == "rejected" and "one active trade per symbol" in same.reason
    opposite = app.executor.handle(Signal("c", "SP500", Side.SELL, 0.9))
    assert opposite.status == "exit"
    app.advance_clock()
    trade = app.store.trade_for_signal("a")
    assert trade.status == "closed" and trade.exit_reason == "opposite_signal"
    assert count(app, OutcomeRow) == 1


def test_exposure_in_the_state_is_the_real_portfolio(app):
    app.executor.handle(Signal("big", "SP500", Side.BUY, 0.9, stop_price=None))
    app.advance_clock()
    account = app.broker.account()
    assert account.gross_position_value > 0
    decision = app.risk.decide(Signal("", "NASDAQ", Side.BUY, 0.9))
    expected_bucket = ["light", "moderate", "heavy", "max"][int(np.searchsorted([0.3, 0.6, 0.8], account.exposure,
                                                                                side="right"))]
    assert decision.state_key.split("|")[2] == expected_bucket
    assert math.isclose(account.exposure, account.gross_position_value / account.equity)


def test_a_crash_between_store_and_submit_is_repaired_on_replay(app, monkeypatch):
    calls = []
    real_submit = app.broker.submit

    def crash(order):
        calls.append(order)
        raise KeyboardInterrupt("process died before the order left")

    monkeypatch.setattr(app.broker, "submit", crash)
    with pytest.raises(KeyboardInterrupt):
        app.executor.handle(Signal("crash", "SP500", Side.BUY, 0.7))
    assert app.store.trade_for_signal("crash").status == "pending"
    monkeypatch.setattr(app.broker, "submit", real_submit)
    again = app.executor.handle(Signal("crash", "SP500", Side.BUY, 0.7))
    assert again.status == "placed" and again.replayed
    assert len(app.advance_clock()) == 1
    assert app.store.trade_for_signal("crash").status == "open"


def test_a_restart_cancels_trades_the_fresh_simulated_account_cannot_settle(db_url):
    settings = make_settings(database_url=db_url, sim_start=START)
    first = build_app(settings)
    first.executor.handle(Signal("before", "SP500", Side.BUY, 0.7))
    first.advance_clock()
    assert first.store.trade_for_signal("before").status == "open"
    first.close()

    second = build_app(settings)  # the simulated account starts afresh: no position, no order
    try:
        trade = second.store.trade_for_signal("before")
        assert trade.status == "canceled" and "no position and no closing order" in trade.reason
        assert count(second, OutcomeRow) == 0 and second.store.agent().total_updates == 0
        assert second.executor.handle(Signal("after", "SP500", Side.BUY, 0.7)).status == "placed"
    finally:
        second.close()
