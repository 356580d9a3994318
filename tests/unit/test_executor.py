"""The executor on the in-memory trade repository (held to the database's contract by
tests/integration/test_trade_repository.py): signal -> decision -> trade -> order, exactly once."""
from __future__ import annotations

from backend.brokers.base import OrderRejected
from backend.domain.model import Side, Signal
from backend.execution.executor import client_order_id
from tests.fakes import DESK_ACCOUNT, Desk, StaticBroker, random_walk


def test_a_signal_places_one_order_and_its_replay_none():
    desk = Desk.build(exposure=0.5)
    first = desk.executor.handle(Signal("s1", "TEST", Side.BUY, 0.7))
    assert first.status == "placed" and not first.replayed
    trade = desk.trades.trade_for_signal("s1")
    assert trade.status == "pending" and trade.client_order_id == client_order_id("s1")
    assert trade.size_usd == first.decision["size_usd"] > 0 and trade.policy == "fixed"
    (order,) = desk.broker.orders
    assert (order.client_order_id, order.side, order.quantity) == (trade.client_order_id, Side.BUY, trade.quantity)
    desk.broker.find_order = lambda cid: order  # the broker has it now
    again = desk.executor.handle(Signal("s1", "TEST", Side.BUY, 0.7))
    assert again.replayed and again.status == "placed" and again.trade_id == trade.id
    assert len(desk.broker.orders) == 1


def test_a_stored_trade_whose_order_never_left_is_sent_on_replay():
    desk = Desk.build()
    desk.executor.handle(Signal("s1", "TEST", Side.BUY, 0.7))
    desk.broker.orders.clear()  # as if the process died between the commit and the submit
    again = desk.executor.handle(Signal("s1", "TEST", Side.BUY, 0.7))
    assert again.replayed and [o.client_order_id for o in desk.broker.orders] == [client_order_id("s1")]


def test_a_zero_size_is_followed_as_a_shadow_without_an_order():
    desk = Desk.build(exposure=0.0)
    result = desk.executor.handle(Signal("s1", "TEST", Side.BUY, 0.7))
    trade = desk.trades.trade_for_signal("s1")
    assert result.status == "skipped" and trade.shadow and trade.quantity == 0 and desk.broker.orders == []


def test_one_active_trade_per_symbol_and_an_opposite_signal_closes_it():
    desk = Desk.build()
    desk.executor.handle(Signal("s1", "TEST", Side.BUY, 0.7))
    same = desk.executor.handle(Signal("s2", "TEST", Side.BUY, 0.9))
    assert same.status == "rejected" and "one active trade per symbol" in same.reason
    assert desk.trades.signal("s2").status == "rejected"
    trade = desk.trades.trade_for_signal("s1")
    pending_exit = desk.executor.handle(Signal("s3", "TEST", Side.SELL, 0.9))
    assert pending_exit.status == "rejected" and "pending" in pending_exit.reason  # its entry has not filled yet
    desk.trades.mark_open(trade.id, quantity=trade.quantity, entry_price=100.0, at=desk.broker.now(), commission=0)
    exit_ = desk.executor.handle(Signal("s4", "TEST", Side.SELL, 0.9))
    assert exit_.status == "exit" and exit_.closed_trade_id == trade.id
    assert desk.trades.trade_for_signal("s1").status == "closing"
    assert [(o.side, o.reduce_only) for o in desk.broker.orders[1:]] == [(Side.SELL, True)]
    late = desk.executor.handle(Signal("s5", "TEST", Side.SELL, 0.9))
    assert late.status == "rejected" and len(desk.broker.orders) == 2


class RefusingBroker(StaticBroker):
    def submit(self, order):
        raise OrderRejected("insufficient buying power")


def test_a_refused_entry_rejects_its_trade_and_frees_the_symbol():
    desk = Desk.build(broker=RefusingBroker(DESK_ACCOUNT, random_walk()))
    result = desk.executor.handle(Signal("s1", "TEST", Side.BUY, 0.7))
    assert result.status == "rejected" and "insufficient buying power" in result.reason
    assert desk.trades.trade_for_signal("s1").status == "rejected" and desk.trades.active_trade("TEST") is None
    assert desk.trades.signal("s1").status == "rejected"
