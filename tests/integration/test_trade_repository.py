"""One contract for every trade repository: PostgreSQL, SQLite and the in-memory one the executor's and the
monitor's unit tests use. What a fake gets wrong here, the unit tests built on it would get wrong too."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from backend.domain.model import Decision, Outcome, Side, Signal
from backend.domain.rewards import Reward
from backend.domain.trade import TRANSITIONS, TradeStatus
from backend.execution.ports import Close, DuplicateSignal, NewTrade, SymbolBusy
from backend.store.db import make_engine, run_migrations
from backend.store.repositories import Store
from tests.fakes import MemoryTrades

T0 = datetime(2020, 1, 2, tzinfo=timezone.utc)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def trades(request, tmp_path):
    if request.param == "memory":
        yield MemoryTrades()
        return
    url = f"sqlite:///{tmp_path}/sizer.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    if request.param == "sqlite":
        run_migrations(url)
    store = Store.open(make_engine(url))
    yield store.trades
    store.close()


def decision(symbol: str, size_usd: float = 1_000.0, skipped: bool = False, side: Side = Side.BUY) -> Decision:
    return Decision(not skipped, symbol, side, 0.0 if skipped else size_usd, 0.0 if skipped else size_usd / 100,
                    1.0, 100.0, 95.0, None, "fixed", "test", exposure=0.0 if skipped else size_usd / 10_000,
                    skipped=skipped)


def new_trade(signal_id: str, symbol: str, **kw) -> NewTrade:
    d = decision(symbol, **kw)
    return NewTrade(Signal(signal_id, symbol, d.side, 0.7), d, f"c-{signal_id}", 10_000.0, T0, None)


def opened(trades, signal_id: str = "s1", symbol: str = "AAA", **kw):
    trade = trades.record_trade(new_trade(signal_id, symbol, **kw))
    trades.mark_open(trade.id, quantity=trade.quantity, entry_price=100.0, at=T0, commission=0.5)
    return trades.trade_for_signal(signal_id)


def close_of(trade, exit_price: float = 101.0) -> Close:
    outcome = Outcome(exposure=0.1, pnl_usd=10.0, pnl_pct=1.0, duration_hours=1.0, max_drawdown_pct=0.5,
                      equity_at_entry=10_000.0, trade_return=0.01)
    return Close(exit_price, "target", T0 + timedelta(hours=1), 0.5, outcome, Reward(1.0, "log_growth"), None)


def test_a_batch_records_the_new_and_refuses_duplicates_and_busy_symbols(trades):
    with trades.opening() as opening:  # an earlier opening
        trades.record_trades(opening, [new_trade("seen", "AAA")])
    batch = [new_trade("s1", "BBB"), new_trade("seen", "CCC"), new_trade("s2", "AAA"), new_trade("s3", "BBB"),
             new_trade("s1", "DDD"), new_trade("s4", "EEE")]
    with trades.opening() as opening:
        answers = trades.record_trades(opening, batch)
    assert [type(a).__name__ for a in answers] == ["Trade", "DuplicateSignal", "SymbolBusy", "SymbolBusy",
                                                   "DuplicateSignal", "Trade"]
    assert [(a.symbol, a.status) for a in answers if not isinstance(a, Exception)] == [("BBB", "pending"),
                                                                                      ("EEE", "pending")]
    for sid in ("s2", "s3"):  # a refused opening leaves nothing behind
        assert trades.signal(sid) is None and trades.trade_for_signal(sid) is None
    assert trades.signal("s1").status == "placed" and trades.trade_for_signal("s1") == answers[0]
    assert {t.symbol for t in trades.active_trades()} == {"AAA", "BBB", "EEE"}


def test_admission_answers_a_seen_signal_then_the_symbols_active_trade(trades):
    assert trades.admission("s1", "AAA") == (None, None)
    trade = trades.record_trade(new_trade("s1", "AAA"))
    seen, active = trades.admission("s1", "AAA")
    assert seen.signal_id == "s1" and seen.decision["symbol"] == "AAA" and active is None
    assert trades.admission("s2", "AAA") == (None, trade)
    with pytest.raises(DuplicateSignal):
        trades.record_signal(Signal("s1", "AAA", Side.SELL, 0.5), decision("AAA"), "rejected", "again")
    with pytest.raises(SymbolBusy):
        trades.record_trade(new_trade("s2", "AAA"))


def test_fills_open_a_trade_once_and_only_grow_it(trades):
    trade = trades.record_trade(new_trade("s1", "AAA", size_usd=1_000.0))
    trades.mark_open(trade.id, quantity=4.0, entry_price=100.0, at=T0, commission=0.1)  # a partial fill
    trades.mark_open(trade.id, quantity=3.0, entry_price=99.0, at=T0 + timedelta(hours=1), commission=0.2)  # older
    t = trades.trade_for_signal("s1")
    assert (t.status, t.quantity, t.entry_price, t.opened_at, t.commission_usd) == ("open", 4.0, 100.0, T0, 0.1)
    trades.mark_open(trade.id, quantity=10.0, entry_price=100.5, at=T0 + timedelta(hours=1), commission=0.3)
    t = trades.trade_by_order("c-s1")
    assert (t.quantity, t.entry_price, t.opened_at, t.commission_usd) == (10.0, 100.5, T0, 0.3)


def test_each_move_happens_only_from_the_statuses_its_transition_allows(trades):
    assert TRANSITIONS[TradeStatus.PENDING] == {TradeStatus.OPEN, TradeStatus.REJECTED, TradeStatus.CANCELED}
    trade = opened(trades)
    trades.reject_trade(trade.id, "too late")  # an open trade is not rejected
    assert trades.trade_for_signal("s1").status == "open" and trades.signal("s1").status == "placed"
    trades.reopen(trade.id, "no exit to reopen")
    assert trades.trade_for_signal("s1").status == "open"
    trades.mark_closing(trade.id, "time_limit")
    assert (trades.trade_for_signal("s1").status, trades.trade_for_signal("s1").exit_reason) == ("closing",
                                                                                                 "time_limit")
    trades.mark_closing(trade.id, "stop")  # already closing: unchanged
    assert trades.trade_for_signal("s1").exit_reason == "time_limit"
    trades.reopen(trade.id, "exit order canceled")
    t = trades.trade_for_signal("s1")
    assert (t.status, t.exit_reason, t.reason) == ("open", None, "exit order canceled")
    trades.cancel_trade(trade.id, "unknown to the broker")
    assert trades.trade_for_signal("s1").status == "canceled" and trades.active_trade("AAA") is None
    for move in (lambda: trades.mark_closing(trade.id, "x"), lambda: trades.reopen(trade.id, "x"),
                 lambda: trades.mark_open(trade.id, quantity=99.0, entry_price=1.0, at=T0, commission=0.0)):
        move()  # an ended trade stays as it ended
        assert trades.trade_for_signal("s1").status == "canceled"
    assert not trades.close(trade, close_of(trade))  # nor does it close, or teach
    assert trades.trade_for_signal("s1").status == "canceled"


def test_a_refused_entry_rejects_the_trade_and_its_signal(trades):
    trade = trades.record_trade(new_trade("s1", "AAA"))
    trades.reject_trade(trade.id, "broker: insufficient buying power")
    assert trades.trade_for_signal("s1").status == "rejected" and trades.active_trade("AAA") is None
    assert (trades.signal("s1").status, trades.signal("s1").reason) == ("rejected",
                                                                        "broker: insufficient buying power")


def test_a_close_is_recorded_exactly_once(trades):
    trade = opened(trades)
    assert trades.close(trade, close_of(trade, 101.0))
    assert not trades.close(trade, close_of(trade, 150.0))  # a replay, even with other numbers
    t = trades.trade_for_signal("s1")
    assert (t.status, t.exit_price, t.exit_reason, t.pnl_usd, t.commission_usd) == ("closed", 101.0, "target",
                                                                                     10.0, 1.0)
    assert t.closed_at == T0 + timedelta(hours=1) and t.max_adverse_pct == 0.5 and not t.active


def test_one_exit_claim_wins(trades):
    trade = opened(trades)
    exit_a, exit_b = Signal("x1", "AAA", Side.SELL, 0.6), Signal("x2", "AAA", Side.SELL, 0.6)
    assert trades.record_exit(exit_a, decision("AAA"), trade.id)
    assert not trades.record_exit(exit_b, decision("AAA"), trade.id) and trades.signal("x2") is None
    assert trades.trade_for_signal("s1").exit_reason == "opposite_signal" and trades.signal("x1").status == "exit"
    trades.release_exit(trade.id)
    assert trades.record_exit(exit_b, decision("AAA"), trade.id)
    with pytest.raises(DuplicateSignal):
        trades.release_exit(trade.id)
        trades.record_exit(exit_b, decision("AAA"), trade.id)


def test_in_flight_notional_counts_pending_entries_and_those_filled_since(trades):
    trades.record_trade(new_trade("p", "AAA", size_usd=1_000.0))
    trades.record_trade(new_trade("shadow", "BBB", skipped=True))
    opened(trades, "o", "CCC", size_usd=2_000.0)  # opened at T0
    assert trades.in_flight_notional() == 1_000.0
    assert trades.in_flight_notional(since=T0) == 3_000.0
    assert trades.in_flight_notional(since=T0 + timedelta(seconds=1)) == 1_000.0
    with trades.opening() as opening:
        assert trades.in_flight_notional(opening=opening) == 1_000.0
    trades.record_decision(Signal("dec-1", "DDD", Side.BUY, 0.7), decision("DDD", 5_000.0), client_order_id="c-d",
                           equity=10_000.0, decided_at=T0)
    trades.flush_decisions()
    assert trades.in_flight_notional() == 1_000.0  # a bot's trade elsewhere is not this account's


def test_a_decision_for_a_bot_holds_no_symbol_and_closes_when_reported(trades):
    trades.record_decision(Signal("dec-1", "AAA", Side.BUY, 0.7), decision("AAA"), client_order_id="c-d",
                           equity=10_000.0, decided_at=T0)
    trades.flush_decisions()
    trade = trades.trade_for_signal("dec-1")
    assert trade.status == "external" and trades.signal("dec-1").status == "decided"
    assert trades.active_trade("AAA") is None
    assert trades.close(trade, close_of(trade)) and trades.trade_for_signal("dec-1").status == "closed"


def test_adverse_excursions_only_grow(trades):
    trade = opened(trades)
    trades.update_adverse_excursions({trade.id: (98.0, 2.0)})
    trades.update_adverse_excursions({trade.id: (99.0, 1.0)})
    t = trades.trade_for_signal("s1")
    assert (t.worst_price, t.max_adverse_pct) == (98.0, 2.0)


def test_trades_held_beside_count_the_overlapping_placed_or_followed_ones(trades):
    first = opened(trades, "a", "AAA")
    opened(trades, "b", "BBB")
    trades.record_trade(new_trade("c", "CCC", skipped=True))  # followed at size 0: it moves with them too
    rejected = trades.record_trade(new_trade("d", "DDD"))
    trades.reject_trade(rejected.id, "broker")
    assert trades.trades_held_beside(first, T0 + timedelta(hours=1)) == 2
    assert trades.trades_held_beside(first, T0) == 0  # nothing was decided before it closed
