"""The whole loop on the real stores (SQLite file and the local PostgreSQL) and the simulated broker."""
from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest
from sqlalchemy import func, select

from backend.bootstrap import build_service
from backend.data.bundled import load_bundled
from backend.domain.model import Side, Signal
from backend.domain.state import pooled_keys
from backend.store.tables import OutcomeRow, SignalRow, TradeRow
from tests.conftest import make_settings

START = date(2008, 3, 3)


@pytest.fixture
def service(db_url):
    """A fixed rule sizes the trades (0.5x equity); the Q agent learns from every one of them."""
    settings = make_settings(
        database_url=db_url, sim_start=START, sizing_policy="fixed", sizing_fixed_exposure=0.5,
        rl_sizing_reward="shaped_pnl", sim_slippage_bps=2, sim_commission_bps=1,
    )
    service = build_service(settings)
    yield service
    service.close()


def count(service, table) -> int:
    with service.store.session() as s:
        return s.scalar(select(func.count()).select_from(table))


def test_signal_to_reward_end_to_end(service):
    spx = load_bundled("SP500")
    i0 = service.broker.index
    result = service.executor.handle(Signal("sig-1", "SP500", Side.BUY, 0.8, time_limit_hours=72))
    assert result.status == "placed", result.reason
    trade = service.store.trades.trade_for_signal("sig-1")
    # the decision's own keys are on the trade row
    assert trade.status == "pending" and not trade.shadow and trade.rl_state_key
    assert trade.rl_state_key == result.decision["state_key"] and trade.policy == "fixed"
    assert trade.rl_state_key.endswith("|light|neutral")  # no positions yet, no outcomes yet
    assert result.decision["exposure"] == pytest.approx(0.5) and result.decision["leverage"] == 1

    service.engine.step()  # fills at the next bar's open
    trade = service.store.trades.trade_for_signal("sig-1")
    assert trade.status == "open"
    assert trade.entry_price == pytest.approx(spx.open[i0 + 1] * (1 + 2e-4))

    bars = 0
    while service.store.trades.trade_for_signal("sig-1").status != "closed":
        service.engine.step()
        bars += 1
        assert bars < 10, "the 72h time limit should close the trade within a few bars"
    trade = service.store.trades.trade_for_signal("sig-1")
    exit_i = service.broker.index

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
    (outcome,) = service.store.outcomes.outcomes(0, 10)[1]
    assert outcome.trade_id == trade.id
    assert outcome.pnl_usd == pytest.approx(pnl, rel=1e-9)
    assert outcome.pnl_pct == pytest.approx(100 * pnl / margin, rel=1e-9)
    assert outcome.max_drawdown_pct == pytest.approx(mae, rel=1e-9)
    assert outcome.duration_hours == pytest.approx(24 * (spx.ts[exit_i] - spx.ts[i0 + 1]).astype(int) / 86400)
    expected_reward = outcome.pnl_pct - outcome.duration_hours / 24 * 0.01 - 0.5 * mae + (0.1 if pnl > 0 else 0)
    assert outcome.reward == pytest.approx(expected_reward, rel=1e-9)

    # the Q-table learned what every exposure would have earned, in the state and each level it pools with;
    # up to 1x the shaped_pnl reward sees the same pnl% on margin, so 0.5x earned exactly this trade's reward
    total, cells = service.store.q_table.q_values(None, 0, 1000)
    menu = service.settings.risk.exposure_menu()
    assert total == 4 * len(menu) and all(c.visits == 1 for c in cells)
    for level in pooled_keys(trade.rl_state_key):
        (cell,) = [c for c in cells if c.state_key == level and c.action_key == "0.5"]
        assert cell.q == pytest.approx(expected_reward, rel=1e-9)
    assert {c.q for c in cells if c.action_key == "0"} == {0.0}
    agent = service.store.q_table.agent()
    assert agent.total_updates == 1 and agent.last_updated_at is not None
    assert service.broker.positions() == []


def test_replayed_signal_places_nothing_and_replayed_close_rewards_once(service):
    first = service.executor.handle(Signal("sig-r", "NASDAQ", Side.SELL, 0.6, time_limit_hours=24))
    again = service.executor.handle(Signal("sig-r", "NASDAQ", Side.SELL, 0.6, time_limit_hours=24))
    assert first.status == again.status == "placed" and again.replayed and again.trade_id == first.trade_id
    assert count(service, TradeRow) == 1 and count(service, SignalRow) == 1
    fills = service.engine.step()
    assert len(fills) == 1  # one order reached the broker
    exit_fills = []
    while not exit_fills:
        exit_fills = [f for f in service.engine.step() if f.side is Side.BUY]
    trade = service.store.trades.trade_for_signal("sig-r")
    assert trade.status == "closed"
    cells = lambda: [(c.state_key, c.action_key, c.visits, c.weight, c.reward_sum)  # noqa: E731
                     for c in service.store.q_table.q_values(None, 0, 1000)[1]]
    before = cells()

    # the broker delivers the same close event twice (a redelivered stream message, a restart...)
    assert service.monitor.close(trade, exit_fills[0]) is False
    service.monitor.on_fill(exit_fills[0])
    assert count(service, OutcomeRow) == 1
    after = cells()
    assert after == before and {c[2] for c in after} == {1}
    assert service.store.q_table.agent().total_updates == 1


def test_same_side_signal_is_refused_and_opposite_signal_closes(service):
    assert service.executor.handle(Signal("a", "SP500", Side.BUY, 0.7)).status == "placed"
    service.engine.step()
    same = service.executor.handle(Signal("b", "SP500", Side.BUY, 0.9))
    assert same.status == "rejected" and "one active trade per symbol" in same.reason
    opposite = service.executor.handle(Signal("c", "SP500", Side.SELL, 0.9))
    assert opposite.status == "exit"
    service.engine.step()
    trade = service.store.trades.trade_for_signal("a")
    assert trade.status == "closed" and trade.exit_reason == "opposite_signal"
    assert count(service, OutcomeRow) == 1


def test_exposure_in_the_state_is_the_real_portfolio(service):
    service.executor.handle(Signal("big", "SP500", Side.BUY, 0.9, stop_price=None))
    service.engine.step()
    account = service.broker.account()
    assert account.gross_position_value > 0
    decision = service.risk.decide(Signal("", "NASDAQ", Side.BUY, 0.9))
    edges = service.settings.state.exposure_edges
    expected_bucket = ["light", "moderate", "heavy", "max"][int(np.searchsorted(edges, account.exposure, side="right"))]
    assert decision.state_key.split("|")[2] == expected_bucket
    assert math.isclose(account.exposure, account.gross_position_value / account.equity)


def test_a_crash_between_store_and_submit_is_repaired_on_replay(service, monkeypatch):
    calls = []
    real_submit = service.broker.submit

    def crash(order):
        calls.append(order)
        raise KeyboardInterrupt("process died before the order left")

    monkeypatch.setattr(service.broker, "submit", crash)
    with pytest.raises(KeyboardInterrupt):
        service.executor.handle(Signal("crash", "SP500", Side.BUY, 0.7))
    assert service.store.trades.trade_for_signal("crash").status == "pending"
    monkeypatch.setattr(service.broker, "submit", real_submit)
    again = service.executor.handle(Signal("crash", "SP500", Side.BUY, 0.7))
    assert again.status == "placed" and again.replayed
    assert len(service.engine.step()) == 1
    assert service.store.trades.trade_for_signal("crash").status == "open"


def test_a_restart_cancels_trades_the_fresh_simulated_account_cannot_settle(db_url):
    settings = make_settings(database_url=db_url, sim_start=START, sizing_policy="fixed")
    first = build_service(settings)
    first.executor.handle(Signal("before", "SP500", Side.BUY, 0.7))
    first.engine.step()
    assert first.store.trades.trade_for_signal("before").status == "open"
    fresh_agent = build_service(settings.replace(sizing_policy="qlearning"), broker=first.broker)
    assert fresh_agent.executor.handle(Signal("skip", "NASDAQ", Side.BUY, 0.7)).status == "skipped"  # size 0
    fresh_agent.close()
    first.engine.step()
    first.engine.step()
    assert first.store.trades.trade_for_signal("skip").status == "open"
    first.close()

    second = build_service(settings)  # the simulated account and its clock start afresh: no position, no order
    try:
        trade = second.store.trades.trade_for_signal("before")
        assert trade.status == "canceled" and "no position and no closing order" in trade.reason
        shadow = second.store.trades.trade_for_signal("skip")
        assert shadow.status == "canceled" and "clock went back" in shadow.reason
        assert count(second, OutcomeRow) == 0 and second.store.q_table.agent().total_updates == 0
        assert second.executor.handle(Signal("after", "SP500", Side.BUY, 0.7)).status == "placed"
    finally:
        second.close()


def test_a_signal_sized_0_is_followed_without_an_order_and_teaches_every_exposure(db_url):
    """A fresh Q agent skips (no evidence of an edge yet). The signal becomes a shadow trade: no order, opened at
    the next bar at the price it was sized at, marked and closed on the bars like a placed trade, and its path
    (charged RL_SHADOW_COST_BPS) teaches every exposure what it would have earned."""
    spx = load_bundled("SP500")
    service = build_service(make_settings(database_url=db_url, sim_start=START, rl_shadow_cost_bps=6.0))
    try:
        i0 = service.broker.index
        result = service.executor.handle(Signal("s-1", "SP500", Side.BUY, 0.8, time_limit_hours=72))
        assert result.status == "skipped" and result.decision["exposure"] == 0 and result.decision["skipped"]
        assert "sized 0" in result.reason
        again = service.executor.handle(Signal("s-1", "SP500", Side.BUY, 0.8, time_limit_hours=72))
        assert again.status == "skipped" and again.replayed
        refused = service.executor.handle(Signal("s-2", "SP500", Side.BUY, 0.9))
        assert refused.status == "rejected" and "sized 0" in refused.reason  # one active trade per symbol
        fills = []
        while service.store.trades.trade_for_signal("s-1").status != "closed":
            fills += service.engine.step()
        assert fills == [] and service.broker.positions() == []
        trade = service.store.trades.trade_for_signal("s-1")
        exit_i = service.broker.index
        assert trade.shadow and trade.quantity == 0 and trade.exit_reason == "time_limit"
        assert trade.entry_price == spx.close[i0] and trade.exit_price == spx.close[exit_i]
        (outcome,) = service.store.outcomes.outcomes(0, 10)[1]
        assert outcome.exposure == 0 and outcome.pnl_usd == 0 and outcome.reward == 0
        path_return = spx.close[exit_i] / spx.close[i0] - 1 - 6e-4
        assert outcome.trade_return == pytest.approx(path_return)
        worst = min(spx.low[i0 + 1:exit_i + 1].min(), spx.close[exit_i])
        assert trade.worst_price == pytest.approx(worst)
        cells = {(c.state_key, c.action_key): c for c in service.store.q_table.q_values(trade.rl_state_key, 0, 100)[1]}
        assert len(cells) == len(service.settings.risk.exposure_menu()) and cells[(trade.rl_state_key, "0")].q == 0
        assert cells[(trade.rl_state_key, "1")].q == pytest.approx(100 * math.log(1 + path_return))
        assert service.store.q_table.agent().total_updates == 1
    finally:
        service.close()


def test_a_replay_after_the_start_up_cancel_says_canceled(service, monkeypatch):
    def crash(order):
        raise KeyboardInterrupt("process died before the order left")

    real_submit = service.broker.submit
    monkeypatch.setattr(service.broker, "submit", crash)
    with pytest.raises(KeyboardInterrupt):
        service.executor.handle(Signal("lost", "SP500", Side.BUY, 0.7))
    monkeypatch.setattr(service.broker, "submit", real_submit)
    service.monitor.reconcile(alone=True)  # start-up: nothing else can be sending it, so it is canceled
    assert service.store.trades.trade_for_signal("lost").status == "canceled"
    again = service.executor.handle(Signal("lost", "SP500", Side.BUY, 0.7))
    assert (again.status, again.replayed) == ("canceled", True) and "never reached" in again.reason
    assert service.broker.open_orders() == [] and service.broker.positions() == []


def test_of_concurrent_opposite_signals_exactly_one_is_the_exit(service):
    from concurrent.futures import ThreadPoolExecutor

    service.executor.handle(Signal("long", "SP500", Side.BUY, 0.7))
    service.engine.step()
    trade = service.store.trades.trade_for_signal("long")
    assert trade.status == "open"
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: service.executor.handle(Signal(f"out-{i}", "SP500", Side.SELL, 0.7)),
                                range(200)))
    exits = [r for r in results if r.status == "exit"]
    assert len(exits) == 1 and exits[0].closed_trade_id == trade.id
    refused = [r for r in results if r.status == "rejected"]
    assert len(refused) == 199 and all("already requested" in r.reason for r in refused)
    with service.store.session() as s:
        assert s.scalar(select(func.count()).select_from(SignalRow).where(SignalRow.status == "exit")) == 1
    exit_orders = [o for o in service.broker.open_orders() if o.side is Side.SELL]
    assert len(exit_orders) == 1
    service.engine.step()
    assert service.store.trades.trade_for_signal("long").status == "closed"
    after = service.executor.handle(Signal("after-close", "SP500", Side.SELL, 0.7))
    assert after.status in ("placed", "skipped")  # the trade is gone: an opposite signal is a new signal now


def test_trades_held_at_the_same_time_count_as_one_between_them(service):
    """SP500 and NASDAQ trades held together move together: each teaches half a trade's weight, so two of them
    are as much evidence of an edge as one trade, not two."""
    service.executor.handle(Signal("spx", "SP500", Side.BUY, 0.7, time_limit_hours=24 * 3))
    service.executor.handle(Signal("ndx", "NASDAQ", Side.BUY, 0.7, time_limit_hours=24 * 3))
    while service.store.trades.active_trades():
        service.engine.step()
    service.executor.handle(Signal("alone", "SP500", Side.BUY, 0.7, time_limit_hours=24 * 3))
    while service.store.trades.active_trades():
        service.engine.step()
    root = {c.action_key: c for c in service.store.q_table.q_values(pooled_keys(
        service.store.trades.trade_for_signal("alone").rl_state_key)[0], 0, 100)[1]}
    assert {c.visits for c in root.values()} == {3}
    assert all(c.weight == pytest.approx(2.0) for c in root.values())  # 0.5 + 0.5 + 1
