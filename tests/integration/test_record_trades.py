"""Store.record_trades: openings recorded together in one transaction, each refused one leaving nothing behind."""
from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

from backend.domain.model import Decision, Side, Signal
from backend.store.db import make_engine, run_migrations
from backend.store.repositories import DuplicateSignal, NewTrade, Store, SymbolBusy
from backend.store.tables import SignalRow, TradeRow

T0 = datetime(2020, 1, 2, tzinfo=timezone.utc)


def new_trade(signal_id: str, symbol: str) -> NewTrade:
    decision = Decision(True, symbol, Side.BUY, 1_000.0, 10.0, 1.0, 100.0, 95.0, None, "fixed", "test",
                        exposure=0.1)
    return NewTrade(Signal(signal_id, symbol, Side.BUY, 0.7), decision, f"c-{signal_id}", 10_000.0, T0, None)


def test_a_batch_records_the_new_and_refuses_duplicates_and_busy_symbols(db_url):
    if db_url.startswith("sqlite"):
        run_migrations(db_url)
    store = Store(make_engine(db_url))
    with store.opening() as opening:  # an earlier opening
        store.record_trades(opening, [new_trade("seen", "AAA")])
    batch = [new_trade("s1", "BBB"), new_trade("seen", "CCC"), new_trade("s2", "AAA"), new_trade("s3", "BBB"),
             new_trade("s1", "DDD"), new_trade("s4", "EEE")]
    with store.opening() as opening:
        answers = store.record_trades(opening, batch)
    assert [type(a) for a in answers] == [TradeRow, DuplicateSignal, SymbolBusy, SymbolBusy, DuplicateSignal,
                                          TradeRow]
    assert [a.symbol for a in answers if isinstance(a, TradeRow)] == ["BBB", "EEE"]
    with store.engine.connect() as c:
        assert sorted(c.scalars(sa.select(SignalRow.signal_id))) == ["s1", "s4", "seen"]  # no refused signal stays
        rows = c.execute(sa.select(TradeRow.signal_id, TradeRow.symbol, TradeRow.id)).all()
    assert sorted((r.signal_id, r.symbol) for r in rows) == [("s1", "BBB"), ("s4", "EEE"), ("seen", "AAA")]
    assert {r.id for r in rows if r.signal_id != "seen"} == {a.id for a in answers if isinstance(a, TradeRow)}
    store.engine.dispose()
