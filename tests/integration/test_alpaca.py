"""The whole loop against Alpaca's API as alpaca-py sees it: the real TradingClient, StockHistoricalDataClient
and TradingStream pointed at a fake Alpaca server on 127.0.0.1, and the real stores."""
from __future__ import annotations

import logging
import math
import time

import pytest
from sqlalchemy import func, select

from backend.bootstrap import build_service
from backend.brokers.base import BrokerUnavailable, OrderRequest
from backend.config import ConfigError, load_settings
from backend.domain.model import Side, Signal
from backend.execution.executor import client_order_id
from backend.execution.monitor import PositionMonitor
from backend.execution.ports import NewTrade
from backend.store.tables import OutcomeRow, QValueRow
from tests.conftest import make_settings
from tests.fake_alpaca import FakeAlpaca


def wait_for(condition, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def fake():
    server = FakeAlpaca().start()
    yield server
    server.stop()


def start_service(fake: FakeAlpaca, db_url: str, **overrides):
    settings = make_settings(database_url=db_url, sizing_policy="fixed", sizing_fixed_exposure=0.5,
                             **{**fake.settings(), **overrides})
    service = build_service(settings)
    wait_for(lambda: fake.streaming, what="the trade-update stream to connect")
    return service


@pytest.fixture
def service(fake, db_url):
    service = start_service(fake, db_url)
    yield service
    service.close()


def trade(service, signal_id: str):
    return service.store.trades.trade_for_signal(signal_id)


def outcomes(service) -> int:
    with service.store.session() as s:
        return s.scalar(select(func.count()).select_from(OutcomeRow))


def test_open_fill_bracket_exit_and_reward(service, fake):
    result = service.executor.handle(Signal("a-1", "SPY", Side.BUY, 0.8, stop_price=95.0, target_price=110.0))
    assert result.status == "placed", result.reason
    order = fake.by_cid(client_order_id("a-1"))
    # whole shares, the stop and target travelling with the entry as a bracket that outlives the day
    assert order.order_class == "bracket" and order.time_in_force == "gtc" and order.qty == int(order.qty)
    assert {(leg.type, leg.stop_price or leg.limit_price) for leg in order.legs} == {("stop", 95.0), ("limit", 110.0)}
    assert result.decision["leverage"] <= 4.0  # the account's multiplier

    fake.fill(order.client_order_id, price=100.0)
    t = wait_for(lambda: trade(service, "a-1").status == "open" and trade(service, "a-1"), what="the entry fill")
    assert t.entry_price == 100.0 and t.quantity == order.qty

    fake.move("SPY", 97.0)  # an adverse move, marked by the poll from minute bars
    service.engine.step()
    assert trade(service, "a-1").max_adverse_pct > 0

    fake.move("SPY", 110.0)  # the take-profit leg fills, the stop leg is canceled
    t = wait_for(lambda: trade(service, "a-1").status == "closed" and trade(service, "a-1"), what="the bracket exit")
    assert t.exit_reason == "target" and t.exit_price == 110.0
    assert t.pnl_usd == pytest.approx(10.0 * order.qty)
    with service.store.session() as s:
        outcome = s.scalar(select(OutcomeRow))
        q = s.get(QValueRow, (t.rl_state_key, "0.5"))
    assert outcome.trade_id == t.id and outcome.max_drawdown_pct > 0 and outcome.won
    # the fixed rule sized it; the Q agent learned what 0.5x (and every other exposure) would have earned
    assert q.visits == 1 and q.q == pytest.approx(100 * math.log(1 + 0.5 * 0.10))


def test_partial_fills_update_the_trade(service, fake):
    service.executor.handle(Signal("p-1", "SPY", Side.BUY, 0.8, stop_price=90.0))
    order = fake.by_cid(client_order_id("p-1"))
    assert order.order_class == "oto"  # a stop and no target
    part = order.qty // 2
    fake.fill(order.client_order_id, qty=part, price=100.0)
    wait_for(lambda: trade(service, "p-1").quantity == part, what="the partial fill")
    assert trade(service, "p-1").status == "open"
    fake.fill(order.client_order_id, price=101.0)
    t = wait_for(lambda: trade(service, "p-1").quantity == order.qty and trade(service, "p-1"), what="the rest")
    assert t.entry_price == pytest.approx((100.0 * part + 101.0 * (order.qty - part)) / order.qty)


def test_a_rejection_carries_the_brokers_message_and_leaves_no_trade(service, fake):
    fake.fail_next("POST", "/v2/orders", 403, "insufficient buying power")
    result = service.executor.handle(Signal("r-1", "SPY", Side.BUY, 0.8, stop_price=95.0))
    assert result.status == "rejected" and "insufficient buying power" in result.reason
    assert trade(service, "r-1").status == "rejected" and service.store.trades.active_trade("SPY") is None
    # a rejection reported later on the stream settles a pending trade too
    service.executor.handle(Signal("r-2", "SPY", Side.BUY, 0.8, stop_price=95.0))
    fake.cancel(client_order_id("r-2"), status="rejected")
    wait_for(lambda: trade(service, "r-2").status == "rejected", what="the streamed rejection")
    assert "rejected" in trade(service, "r-2").reason


def test_a_timed_out_submit_is_found_not_repeated(service, fake):
    fake.delay_next_submit(2.0)  # the order is made, the answer comes after the client's 0.5 s timeout
    result = service.executor.handle(Signal("t-1", "SPY", Side.BUY, 0.8, stop_price=95.0))
    assert result.status == "placed"
    cid = client_order_id("t-1")
    assert [o.client_order_id for o in fake.orders.values()].count(cid) == 1
    assert fake.requests.count(("GET", "/v2/orders:by_client_order_id")) >= 1  # looked up after the timeout


def test_a_second_submit_under_one_client_id_returns_the_first_order(service, fake):
    order = OrderRequest("sz-twice", "SPY", Side.BUY, 5, stop_price=95.0, target_price=110.0)
    first, second = service.broker.submit(order), service.broker.submit(order)
    assert first.broker_order_id == second.broker_order_id
    assert [o.client_order_id for o in fake.orders.values()].count("sz-twice") == 1


def test_the_cached_account_is_read_again_after_a_fill_from_the_stream(fake, sqlite_url):
    service = start_service(fake, sqlite_url, alpaca_account_max_age_seconds=3600)
    try:
        reads = lambda: fake.requests.count(("GET", "/v2/account"))  # noqa: E731
        before = service.broker.account()
        assert service.broker.account() is before and before.as_of is not None
        service.executor.handle(Signal("c-1", "SPY", Side.BUY, 0.8, stop_price=95.0))
        assert service.broker.account() is before  # an order alone does not read it again: it is counted in flight
        n = reads()
        fake.fill(client_order_id("c-1"), price=100.0)  # the stream's fill makes the next decision ask again
        after = wait_for(lambda: service.broker.account().gross_position_value > 0 and service.broker.account(),
                         what="the account read after the fill")
        assert reads() == n + 1 and after.gross_position_value == trade(service, "c-1").quantity * 100.0
    finally:
        service.close()


def test_transient_failures_are_retried_and_bounded(service, fake):
    fake.fail_next("GET", "/v2/positions", 503, times=2)
    fake.fail_next("GET", "/v2/positions", 429, times=5)  # rate limited: the process pauses; no attempt is spent
    assert service.broker.positions() == []
    fake.fail_next("GET", "/v2/positions", 500, times=4)  # one try and three retries
    with pytest.raises(BrokerUnavailable, match="4 times"):
        service.broker.positions()
    fake.fail_next("GET", "/v2/positions", 403, "account is blocked")  # not an order refused: no retry, no OrderRejected
    with pytest.raises(BrokerUnavailable, match="refused positions .*account is blocked"):
        service.broker.positions()


def test_a_position_closed_by_hand_is_rewarded(service, fake):
    service.executor.handle(Signal("h-1", "SPY", Side.BUY, 0.8, stop_price=95.0, target_price=120.0))
    fake.fill(client_order_id("h-1"), price=100.0)
    wait_for(lambda: trade(service, "h-1").status == "open", what="the entry")
    fake.close_by_hand("SPY", 103.0)
    t = wait_for(lambda: trade(service, "h-1").status == "closed" and trade(service, "h-1"), what="the close")
    assert t.exit_price == 103.0 and outcomes(service) == 1


def test_a_close_the_stream_missed_is_found_by_the_poll(service, fake):
    service.executor.handle(Signal("m-1", "SPY", Side.BUY, 0.8, stop_price=95.0))
    fake.fill(client_order_id("m-1"), price=100.0)
    wait_for(lambda: trade(service, "m-1").status == "open", what="the entry")
    fake.close_by_hand("SPY", 98.0, notify=False)
    service.engine.step()
    t = trade(service, "m-1")
    assert t.status == "closed" and t.exit_price == 98.0 and outcomes(service) == 1
    service.engine.step()
    assert outcomes(service) == 1


def test_a_time_limit_cancels_the_legs_then_exits(service, fake):
    service.executor.handle(Signal("x-1", "SPY", Side.BUY, 0.8, stop_price=95.0, target_price=120.0,
                                   time_limit_hours=1e-6))
    entry = fake.by_cid(client_order_id("x-1"))
    fake.fill(entry.client_order_id, price=100.0)
    wait_for(lambda: trade(service, "x-1").status == "open", what="the entry")
    service.engine.step()
    assert trade(service, "x-1").status == "closing"
    assert all(leg.status == "canceled" for leg in entry.legs)  # they held the shares
    exit_order = fake.by_cid(client_order_id("x-1") + "-x")
    assert exit_order.side == "sell" and exit_order.qty == entry.qty and exit_order.order_class == "simple"
    fake.fill(exit_order.client_order_id, price=101.0)
    t = wait_for(lambda: trade(service, "x-1").status == "closed" and trade(service, "x-1"), what="the exit")
    assert t.exit_reason == "time_limit" and t.exit_price == 101.0


def test_an_exit_canceled_by_the_broker_is_tried_again_under_a_new_id(service, fake):
    service.executor.handle(Signal("c-1", "SPY", Side.BUY, 0.8, stop_price=95.0, time_limit_hours=1e-6))
    fake.fill(client_order_id("c-1"), price=100.0)
    wait_for(lambda: trade(service, "c-1").status == "open", what="the entry")
    service.engine.step()
    fake.cancel(client_order_id("c-1") + "-x")
    wait_for(lambda: trade(service, "c-1").status == "open", what="the trade to reopen")
    service.engine.step()
    assert trade(service, "c-1").status == "closing"
    assert fake.by_cid(client_order_id("c-1") + "-x2").status == "new"


def test_crypto_is_unleveraged_long_only_and_its_stop_is_watched(service, fake):
    sell = service.executor.handle(Signal("k-0", "BTC/USD", Side.SELL, 0.8, stop_price=110.0))
    assert sell.status == "rejected" and "sold short" in sell.reason
    result = service.executor.handle(Signal("k-1", "BTC/USD", Side.BUY, 0.8, stop_price=95.0))
    assert result.status == "placed" and result.decision["leverage"] == 1.0
    order = fake.by_cid(client_order_id("k-1"))
    assert order.order_class == "simple" and order.time_in_force == "gtc" and not order.legs
    fake.fill(order.client_order_id, price=100.0)
    wait_for(lambda: trade(service, "k-1").status == "open", what="the entry")
    fake.move("BTC/USD", 94.0)  # through the stop: nobody at the broker holds it, the monitor does
    service.engine.step()
    exit_order = fake.by_cid(client_order_id("k-1") + "-x")
    fake.fill(exit_order.client_order_id, price=94.0)
    t = wait_for(lambda: trade(service, "k-1").status == "closed" and trade(service, "k-1"), what="the stop")
    assert t.exit_reason == "stop"


def test_signals_while_the_market_is_closed_are_refused(service, fake):
    fake.market_open = False
    result = service.executor.handle(Signal("z-1", "SPY", Side.BUY, 0.8, stop_price=95.0))
    assert result.status == "rejected" and "closed" in result.reason and not fake.orders


def test_restart_reconciles_the_store_with_the_account(fake, db_url):
    service = start_service(fake, db_url)
    service.executor.handle(Signal("s-1", "SPY", Side.BUY, 0.8, stop_price=95.0))  # will fill while sizer is down
    fake.assets["QQQ"] = fake.assets["SPY"].__class__("QQQ", price=200.0)
    service.executor.handle(Signal("s-2", "QQQ", Side.BUY, 0.8, stop_price=190.0))  # will be closed by hand while down
    fake.fill(client_order_id("s-2"), price=200.0)
    wait_for(lambda: trade(service, "s-2").status == "open", what="the entry")
    service.close()

    fake.fill(client_order_id("s-1"), price=100.0, notify=False)
    fake.close_by_hand("QQQ", 204.0, notify=False)
    fake.assets["IWM"] = fake.assets["SPY"].__class__("IWM", price=50.0)
    fake.positions["IWM"] = (10.0, 50.0)  # bought outside sizer

    service = start_service(fake, db_url)
    try:
        repaired = trade(service, "s-1")  # by its order id
        assert repaired.status == "open" and repaired.entry_price == 100.0
        assert trade(service, "s-2").status == "closed" and trade(service, "s-2").exit_price == 204.0
        assert outcomes(service) == 1
        differences = service.reconciliation.differences
        assert any("entry fill" in d and "SPY" in d for d in differences)
        assert any("closed outside sizer" in d and "QQQ" in d for d in differences)
        assert any("IWM" in d and "not a sizer trade" in d for d in differences)
    finally:
        service.close()


def test_live_trading_needs_both_settings(fake):
    base = dict(fake.settings(), alpaca_paper=False)
    with pytest.raises(ConfigError, match="ALPACA_LIVE_TRADING_CONFIRMED"):
        load_settings(_env_file=None, **base)
    with pytest.raises(ConfigError, match="ALPACA_API_KEY_ID"):
        load_settings(_env_file=None, broker="alpaca")
    assert load_settings(_env_file=None, **base, alpaca_live_trading_confirmed=True).alpaca.paper is False


def test_keys_are_never_logged(fake, sqlite_url, caplog):
    caplog.set_level(logging.DEBUG)
    service = start_service(fake, sqlite_url)
    try:
        service.executor.handle(Signal("l-1", "SPY", Side.BUY, 0.8, stop_price=95.0))
        fake.fail_next("GET", "/v2/positions", 500, times=10)
        with pytest.raises(BrokerUnavailable):
            service.broker.positions()
    finally:
        service.close()
    assert "secret-test" not in caplog.text and "secret-test" not in repr(service.settings)


def test_an_entry_fill_the_stream_missed_is_found_by_the_poll(service, fake):
    service.executor.handle(Signal("e-1", "SPY", Side.BUY, 0.8, stop_price=95.0))
    fake.fill(client_order_id("e-1"), price=100.0, notify=False)
    service.engine.step()
    assert trade(service, "e-1").status == "open" and trade(service, "e-1").entry_price == 100.0


def test_a_pending_trade_without_an_order_is_given_a_grace_period(service, fake):
    """Its order may still be on its way (another worker, another thread): only an old one is orphaned."""
    signal = Signal("g-1", "SPY", Side.BUY, 0.8, stop_price=95.0)
    service.store.trades.record_trade(NewTrade(signal, service.risk.decide(signal), client_order_id("g-1"), 1e5,
                                               service.broker.now(), None))
    service.engine.step()
    assert trade(service, "g-1").status == "pending"
    PositionMonitor(service.settings.sizing, service.store.trades, service.broker, pending_grace_s=0.0).on_bar()
    assert trade(service, "g-1").status == "canceled" and "never reached" in trade(service, "g-1").reason
