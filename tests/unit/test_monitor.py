"""The position monitor on the in-memory trade repository: fills open and close trades, a close is recorded with
what its path earned, exactly once."""
from __future__ import annotations

from datetime import timedelta

import pytest

from backend.domain.model import Fill, OrderEnded, OutcomeReport, Side, Signal
from backend.execution.monitor import ReportConflict, exit_order_id
from tests.fakes import Desk


def placed(desk: Desk, entry: float = 100.0):
    desk.executor.handle(Signal("s1", "TEST", Side.BUY, 0.7))
    trade = desk.trades.trade_for_signal("s1")
    desk.monitor.on_fill(Fill(trade.client_order_id, "TEST", Side.BUY, trade.quantity, entry, desk.broker.now(),
                              commission=1.0))
    return desk.trades.trade_for_signal("s1")


def test_an_entry_fill_opens_and_an_exit_fill_closes_once_with_its_paths_outcome():
    desk = Desk.build(exposure=0.5)
    trade = placed(desk)
    assert (trade.status, trade.entry_price, trade.commission_usd) == ("open", 100.0, 1.0)
    later = desk.broker.now() + timedelta(hours=24)
    exit_fill = Fill("sz-exit", "TEST", Side.SELL, trade.quantity, 102.0, later, commission=1.0, reason="target")
    desk.monitor.on_fill(exit_fill)
    desk.monitor.on_fill(exit_fill)  # delivered twice
    (trade_id, close), = desk.trades.closes
    assert trade_id == trade.id and close.exit_price == 102.0 and close.exit_reason == "target"
    notional = trade.quantity * 100.0
    assert close.outcome.exposure == pytest.approx(notional / trade.equity_at_entry)
    assert close.outcome.pnl_usd == pytest.approx(notional * 0.02 - 2.0)  # the move, less both commissions
    assert close.outcome.duration_hours == 24.0 and close.reward.fn == "log_growth"
    assert desk.trades.trade_for_signal("s1").status == "closed"


def test_an_exit_order_that_ends_unfilled_leaves_the_trade_open_for_another_exit():
    desk = Desk.build()
    trade = placed(desk)
    desk.monitor.request_close(trade, "time_limit")
    assert desk.trades.trade_for_signal("s1").status == "closing"
    desk.monitor.on_order_ended(OrderEnded(exit_order_id(trade.client_order_id, 1), "TEST", Side.SELL, "canceled",
                                           0.0, "market closed", desk.broker.now()))
    assert desk.trades.trade_for_signal("s1").status == "open" and desk.trades.closes == []


def test_a_rejected_entry_order_rejects_its_trade():
    desk = Desk.build()
    desk.executor.handle(Signal("s1", "TEST", Side.BUY, 0.7))
    trade = desk.trades.trade_for_signal("s1")
    desk.monitor.on_order_ended(OrderEnded(trade.client_order_id, "TEST", Side.BUY, "rejected", 0.0, "halted",
                                           desk.broker.now()))
    assert desk.trades.trade_for_signal("s1").status == "rejected" and desk.trades.active_trade("TEST") is None


def test_a_bots_report_teaches_once_and_a_different_one_conflicts():
    desk = Desk.build(exposure=0.5)
    decision = desk.executor.decide(Signal("x", "TEST", Side.BUY, 0.7))
    now = desk.broker.now()
    report = OutcomeReport(entry_price=100.0, exit_price=101.0, quantity=100.0, opened_at=now,
                           closed_at=now + timedelta(hours=2), worst_price=99.0)
    learned, trade = desk.monitor.report(decision.decision_id, report)
    assert learned and trade.status == "closed" and trade.exit_price == 101.0 and trade.entry_price == 100.0
    assert desk.monitor.report(decision.decision_id, report)[0] is False  # the same report again: nothing new
    with pytest.raises(ReportConflict):
        desk.monitor.report(decision.decision_id, OutcomeReport(100.0, 90.0, 100.0, now, now + timedelta(hours=2),
                                                                90.0))
    assert len(desk.trades.closes) == 1
