import numpy as np
import pytest

from backend.brokers.base import OrderRequest, OrderRejected
from backend.brokers.sim import EndOfData, SimBroker
from backend.domain.bars import Series
from backend.domain.model import Side


def series(rows, symbol="X"):
    o, h, lo, c = (np.array(col, dtype=float) for col in zip(*rows))
    ts = np.datetime64("2020-01-01", "s") + np.arange(len(rows)) * np.timedelta64(1, "D")
    return Series(symbol, ts, o, h, lo, c, np.zeros(len(rows)))


FLAT = [(100, 101, 99, 100)] * 3


def broker(rows, **kw):
    defaults = dict(start_index=0, initial_cash=10_000, multiplier=2, slippage_bps=10, commission_bps=5)
    return SimBroker({"X": series(rows)}, **{**defaults, **kw})


def test_market_order_fills_at_next_open_with_slippage_and_commission():
    b = broker(FLAT[:1] + [(110, 112, 108, 111)] + FLAT)
    b.submit(OrderRequest("o1", "X", Side.BUY, 10))
    assert b.positions() == [] and b.find_order("o1").status == "accepted"
    (fill,) = b.advance()
    assert fill.price == pytest.approx(110 * 1.001) and fill.commission == pytest.approx(10 * 110.11 * 0.0005)
    acct = b.account()
    assert acct.cash == pytest.approx(10_000 - 1101.1 - fill.commission)
    assert acct.equity == pytest.approx(acct.cash + 10 * 111)
    assert acct.gross_position_value == pytest.approx(1110)
    assert b.find_order("o1").status == "filled"


def test_submit_is_idempotent_on_client_order_id():
    b = broker(FLAT)
    b.submit(OrderRequest("o1", "X", Side.BUY, 10))
    b.submit(OrderRequest("o1", "X", Side.BUY, 10))
    assert len(b.advance()) == 1
    assert b.positions()[0].quantity == 10


def test_stop_inside_the_bar_fills_at_the_stop_and_a_gap_fills_at_the_open():
    b = broker([(100, 101, 99, 100), (100, 101, 99, 100), (99, 100, 94, 96)], slippage_bps=0)
    b.submit(OrderRequest("o1", "X", Side.BUY, 10, stop_price=95, target_price=110))
    b.advance()
    (exit_fill,) = b.advance()
    assert (exit_fill.reason, exit_fill.price, exit_fill.client_order_id) == ("stop", 95, "o1-sl")
    assert b.positions() == []

    gap = broker([(100, 101, 99, 100), (100, 101, 99, 100), (90, 92, 88, 91)], slippage_bps=0)
    gap.submit(OrderRequest("o1", "X", Side.BUY, 10, stop_price=95))
    gap.advance()
    (exit_fill,) = gap.advance()
    assert exit_fill.price == 90  # gapped through the stop: the open, not the stop


def test_short_target_and_stop_first_when_one_bar_touches_both():
    b = broker([(100, 101, 99, 100), (100, 101, 99, 100), (100, 100, 89, 95)], slippage_bps=0)
    b.submit(OrderRequest("s1", "X", Side.SELL, 5, stop_price=105, target_price=90))
    b.advance()
    (fill,) = b.advance()
    assert (fill.reason, fill.price, fill.side) == ("target", 90, Side.BUY)

    both = broker([(100, 101, 99, 100), (100, 101, 99, 100), (100, 106, 89, 95)], slippage_bps=0)
    both.submit(OrderRequest("s1", "X", Side.SELL, 5, stop_price=105, target_price=90))
    both.advance()
    (fill,) = both.advance()
    assert fill.reason == "stop"


def test_buying_power_and_shorting_are_enforced():
    b = broker(FLAT, multiplier=2)  # 10k equity -> 20k buying power
    with pytest.raises(OrderRejected, match="buying power"):
        b.submit(OrderRequest("big", "X", Side.BUY, 201))
    b.submit(OrderRequest("ok", "X", Side.BUY, 150))
    with pytest.raises(OrderRejected, match="buying power"):  # pending orders use buying power too
        b.submit(OrderRequest("more", "X", Side.BUY, 60))
    no_short = broker(FLAT, shorting_enabled=False)
    with pytest.raises(OrderRejected, match="short"):
        no_short.submit(OrderRequest("s", "X", Side.SELL, 1))
    with pytest.raises(OrderRejected, match="no buy position"):
        no_short.submit(OrderRequest("r", "X", Side.SELL, 1, reduce_only=True))
    with pytest.raises(OrderRejected, match="unknown symbol"):
        b.submit(OrderRequest("u", "NOPE", Side.BUY, 1))


def test_reduce_only_close_after_a_stop_fills_nothing():
    b = broker([(100, 101, 99, 100), (100, 101, 99, 100), (99, 100, 94, 96), (96, 97, 95, 96)], slippage_bps=0)
    b.submit(OrderRequest("o1", "X", Side.BUY, 10, stop_price=95))
    b.advance()
    b.submit(OrderRequest("o1-x", "X", Side.SELL, 10, reduce_only=True))
    fills = b.advance()  # the close fills at the open (99) before the stop could
    assert [f.client_order_id for f in fills] == ["o1-x"] and b.positions() == []
    assert b.advance() == []


def test_margin_call_liquidates_at_the_next_open():
    rows = [(100, 101, 99, 100), (100, 101, 99, 100), (60, 61, 40, 41), (41, 42, 40, 41)]
    b = broker(rows, multiplier=4, slippage_bps=0, commission_bps=0)
    b.submit(OrderRequest("o1", "X", Side.BUY, 350))
    b.advance()
    b.advance()  # equity 10k - 350*59 < 0.25 * gross
    (fill,) = b.advance()
    assert fill.client_order_id.startswith("margin-call") and b.positions() == []


def test_end_of_data():
    b = broker(FLAT)
    b.advance(), b.advance()
    with pytest.raises(EndOfData):
        b.advance()
