"""Alpaca through the official alpaca-py SDK: account, assets, orders and positions from TradingClient, bars
from the historical data clients, fills and cancels from TradingStream.

Every request waits for the process's token bucket (ALPACA_RATE_LIMIT_PER_MINUTE), has a timeout and is retried
here (5xx, timeouts, dropped connections) with exponential backoff and full jitter, a bounded number of times;
the SDK's own retry is switched off so the two do not multiply. A 429 pauses the bucket for every thread until
the time Alpaca names, and is retried without spending an attempt: a burst slows down instead of failing. A submit whose answer was lost is looked up by client_order_id before it is retried, so a retry
never creates a second order. 403 and 422 answers (e.g. insufficient buying power) become OrderRejected
carrying Alpaca's message.

Stocks trade in whole shares so the stop and target can travel with the entry as a bracket (OTO without a
target): Alpaca accepts no fractional bracket orders. Crypto trades fractionally, unleveraged and long only,
as simple GTC market orders; its stop and target are enforced by the position monitor.

The reads a decision needs are cached for as long as they stay true: the account for ALPACA_ACCOUNT_MAX_AGE_SECONDS
(sooner after a fill), bars until the next bar closes, asset rules for minutes, the clock until its next open or
close. A cached account says when it was read (`Account.as_of`): the caps count every order filled since then as
still in flight, so a stale account can never let a burst past a cap. `prefetch` loads the bars and asset rules
of many symbols in a few requests.
"""
from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, TypeVar

import numpy as np
import pandas as pd
import requests
from requests.adapters import HTTPAdapter
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.historical import CryptoHistoricalDataClient, StockHistoricalDataClient
from alpaca.data.requests import CryptoBarsRequest, StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderClass, OrderSide, OrderType, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Order, TradeUpdate
from alpaca.trading.requests import GetOrdersRequest, MarketOrderRequest, StopLossRequest, TakeProfitRequest
from alpaca.trading.stream import TradingStream
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from backend.brokers.base import BrokerPosition, BrokerUnavailable, OrderAck, OrderRejected, OrderRequest
from backend.brokers.ratelimit import TokenBucket
from backend.config import AlpacaSettings
from backend.domain.bars import Series
from backend.domain.model import Account, AssetRules, Fill, OrderEnded, Side

log = logging.getLogger(__name__)
T = TypeVar("T")

TIMEFRAMES = {  # setting -> (alpaca-py timeframe, length in trading days)
    "1Day": (TimeFrame(1, TimeFrameUnit.Day), 1.0),
    "1Hour": (TimeFrame(1, TimeFrameUnit.Hour), 1 / 6.5),
    "15Min": (TimeFrame(15, TimeFrameUnit.Minute), 1 / 26),
    "1Min": (TimeFrame(1, TimeFrameUnit.Minute), 1 / 390),
}
ENDED = {"canceled": "canceled", "expired": "expired", "rejected": "rejected", "replaced": "canceled",
         "suspended": "canceled", "stopped": "canceled"}
DUPLICATE_ID = "client_order_id must be unique"  # Alpaca's answer to a second order under one client id
ASSET_TTL_S = 600.0
CLOCK_TTL_S = 300.0  # at most: the clock's next open or close ends it sooner
HISTORY_MIN_TTL_S = 60.0  # bars whose next one is overdue (a halt, a holiday) are asked again after this
ACCOUNT_FILL_REFRESH_S = 1.0  # after a fill, the account is read again, at most this often
FILL_CLOCK_SLACK = timedelta(seconds=1)  # a fill stamped by Alpaca's clock this much before our read still counts
RATE_BURST = 10  # requests that may go out at once before the bucket spaces them
MAX_PAUSE_S = 60.0


def is_crypto(symbol: str) -> bool:
    return "/" in symbol


def _our_symbol(symbol: str, crypto: bool) -> str:
    """Alpaca names crypto positions BTCUSD but orders and bars BTC/USD: use the latter everywhere."""
    if crypto and "/" not in symbol:
        for quote in ("USDT", "USDC", "USD", "BTC"):
            if symbol.endswith(quote) and len(symbol) > len(quote):
                return f"{symbol[:-len(quote)]}/{quote}"
    return symbol


def _price(p: float) -> float:
    """Alpaca accepts 2 decimals at or above $1 and 4 below."""
    return round(p, 2 if p >= 1 else 4)


def _f(value) -> float:
    return float(value) if value not in (None, "") else 0.0


def _order_reason(order: Order) -> str:
    kind = str(getattr(order.type or order.order_type, "value", order.type or ""))
    return {"stop": "stop", "stop_limit": "stop", "trailing_stop": "stop", "limit": "target"}.get(kind, "market")


def to_ack(order: Order) -> OrderAck:
    """Alpaca's many order states folded into ours; every state not ended, filled or partly filled
    (new, held, pending_*...) is still working: "accepted"."""
    status = str(getattr(order.status, "value", order.status))
    status = "partially_filled" if status == "partially_filled" else (
        "filled" if status == "filled" else ENDED.get(status, "accepted"))
    crypto = str(getattr(order.asset_class, "value", order.asset_class)) == "crypto"
    return OrderAck(
        client_order_id=order.client_order_id,
        broker_order_id=str(order.id),
        status=status,
        symbol=_our_symbol(order.symbol or "", crypto),
        side=Side(str(getattr(order.side, "value", order.side))),
        filled_quantity=_f(order.filled_qty),
        filled_avg_price=_f(order.filled_avg_price) or None,
        updated_at=order.filled_at or order.canceled_at or order.expired_at or order.failed_at or order.updated_at,
        reason=_order_reason(order),
    )


def _harden(client, timeout_s: float, bucket: TokenBucket, connections: int) -> None:
    """Give every request of an alpaca-py client a timeout and a token from the bucket, keep `connections`
    connections for concurrent callers, and leave retrying to us (the SDK has no option for any of these: it
    retries 429 and 504 with a fixed 3 s sleep and waits on a socket forever)."""
    client._retry = 0
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=connections)
    client._session.mount("https://", adapter)
    client._session.mount("http://", adapter)
    request = functools.partial(client._session.request, timeout=timeout_s)

    def limited(*args, **kwargs):
        bucket.acquire()
        return request(*args, **kwargs)

    client._session.request = limited


def _retry_after(exc: APIError, otherwise: float) -> float:
    """How long a 429 asks us to wait: Retry-After (seconds) or X-RateLimit-Reset (epoch seconds) when Alpaca
    sends them, else `otherwise`; never longer than MAX_PAUSE_S."""
    headers = exc.response.headers if exc.response is not None else {}
    try:
        if "Retry-After" in headers:
            otherwise = float(headers["Retry-After"])
        elif "X-RateLimit-Reset" in headers:
            otherwise = float(headers["X-RateLimit-Reset"]) - time.time()
    except ValueError:
        pass
    return min(MAX_PAUSE_S, max(0.05, otherwise))


def _api_message(exc: APIError) -> str:
    try:
        return str(json.loads(str(exc)).get("message", exc))
    except (ValueError, AttributeError):
        return str(exc)


def _rate_limited(exc: BaseException) -> bool:
    return isinstance(exc, APIError) and exc.status_code == 429


def _transient(exc: BaseException) -> bool:
    """5xx answers, timeouts and dropped connections: the same request may well pass in a moment."""
    return isinstance(exc, (requests.Timeout, requests.ConnectionError)) or (
        isinstance(exc, APIError) and (exc.status_code or 0) >= 500)


def _failure(exc: BaseException) -> str:
    if isinstance(exc, APIError):
        return f"HTTP {exc.status_code}: {_api_message(exc)}"
    return f"{exc.__class__.__name__}: {exc}"


class AlpacaBroker:
    name = "alpaca"

    def __init__(self, settings: AlpacaSettings, connections: int) -> None:
        """`connections`: the requests this process sends at once (WORKER_CONCURRENCY)."""
        key = settings.api_key_id.get_secret_value()
        secret = settings.api_secret_key.get_secret_value()
        self._trading = TradingClient(key, secret, paper=settings.paper, url_override=settings.trading_url)
        self._stocks = StockHistoricalDataClient(key, secret, raw_data=True, url_override=settings.data_url)
        self._crypto = CryptoHistoricalDataClient(key, secret, raw_data=True, url_override=settings.data_url)
        self.bucket = TokenBucket(settings.rate_limit_per_minute, RATE_BURST)
        for client in (self._trading, self._stocks, self._crypto):
            _harden(client, settings.timeout_seconds, self.bucket, connections)
        self._feed = DataFeed(settings.data_feed)
        self._timeframe, self._bar_days = TIMEFRAMES[settings.bar_timeframe]
        self._max_retries = settings.max_retries
        self._paper = settings.paper
        self._backoff_s = 0.25
        self._assets: dict[str, tuple[float, AssetRules]] = {}
        self._listed_at = -ASSET_TTL_S  # when every active asset was last listed (monotonic)
        self._clock: tuple[datetime, bool] = (datetime.min.replace(tzinfo=timezone.utc), False)  # (until, open)
        self._history: dict[str, tuple[datetime, int, Series]] = {}  # symbol -> (good until, count, bars)
        self._account_max_age_s = settings.account_max_age_seconds
        self._account: tuple[float, Account] | None = None  # (read at, monotonic; the account)
        self._account_changed = False
        self._account_lock = threading.Lock()
        self._ranges: dict[str, tuple[datetime, float, float, datetime]] = {}  # symbol -> since, low, high, next

    # --- requests with retries ---------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T], recover: Callable[[], T | None] | None = None,
              order: bool = False) -> T:
        """fn() with bounded retries of transient failures. `recover`, tried before each retry, answers
        instead when the failed attempt may have taken effect (a submit whose reply was lost). A 429 is sent
        again without spending a retry (`_pause`). For an `order` request, 403 and 422 are the broker refusing
        it (OrderRejected); elsewhere they mean sizer cannot work with this account (BrokerUnavailable)."""
        pauses = itertools.count()  # this call's 429s so far
        send = Retrying(retry=retry_if_exception(_rate_limited),
                        before_sleep=lambda state: self._pause(what, state.outcome.exception(), next(pauses)))
        retries = Retrying(
            retry=retry_if_exception(_transient), stop=stop_after_attempt(self._max_retries + 1),
            wait=wait_random_exponential(self._backoff_s),  # full jitter
            before_sleep=lambda state: log.warning("alpaca %s: %s; retry %d/%d in %.2fs", what,
                                                   _failure(state.outcome.exception()), state.attempt_number,
                                                   self._max_retries, state.next_action.sleep))
        try:
            for attempt in retries:
                with attempt:
                    if recover is not None and attempt.retry_state.attempt_number > 1:
                        found = recover()
                        if found is not None:
                            return found
                    return send(fn)
        except RetryError as exc:
            last = exc.last_attempt
            raise BrokerUnavailable(f"alpaca {what} failed {last.attempt_number} times; last: "
                                    f"{_failure(last.exception())}") from None
        except APIError as exc:
            status = exc.status_code
            if status == 401:
                raise BrokerUnavailable(f"alpaca refused the API keys: {_api_message(exc)}") from None
            if status in (403, 422):
                if order:
                    raise OrderRejected(_api_message(exc)) from None
                raise BrokerUnavailable(f"alpaca refused {what} (HTTP {status}): {_api_message(exc)}") from None
            raise

    def _pause(self, what: str, exc: APIError, pauses: int) -> None:
        """A 429 is no failure: every request of the process waits (the bucket) until the time Alpaca names, or
        for a backoff that doubles with each of the call's earlier 429s."""
        wait = _retry_after(exc, self._backoff_s * 2 ** pauses)
        log.warning("alpaca %s: rate limited (HTTP 429); requests pause %.2fs", what, wait)
        self.bucket.pause(wait)

    def _get_or_none(self, what: str, fn: Callable[[], T], order: bool = False) -> T | None:
        try:
            return self._call(what, fn, order=order)
        except APIError as exc:
            if exc.status_code == 404:
                return None
            raise

    # --- the Broker port -----------------------------------------------------------------------------
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def health(self) -> str:
        clock = self._trading.get_clock()  # once, without retries: health must answer quickly
        return f"ok (alpaca {'paper' if self._paper else 'LIVE'}, market {'open' if clock.is_open else 'closed'})"

    def advance(self) -> list[Fill]:
        return []

    def account(self) -> Account:
        """The account, cached for ALPACA_ACCOUNT_MAX_AGE_SECONDS and read again soon after a fill; one thread
        reads it while the others wait for that answer."""
        with self._account_lock:
            now = time.monotonic()
            if self._account is None or now - self._account[0] > (
                    ACCOUNT_FILL_REFRESH_S if self._account_changed else self._account_max_age_s):
                self._account_changed = False
                as_of = self.now() - FILL_CLOCK_SLACK
                a = self._call("account", self._trading.get_account)
                self._account = (now, Account(
                    equity=_f(a.equity),
                    cash=_f(a.cash),
                    buying_power=_f(a.buying_power),
                    multiplier=max(1.0, _f(a.multiplier)),
                    shorting_enabled=bool(a.shorting_enabled),
                    gross_position_value=_f(a.long_market_value) + abs(_f(a.short_market_value)),
                    non_marginable_buying_power=_f(a.non_marginable_buying_power),
                    as_of=as_of,
                ))
            return self._account[1]

    def account_changed(self) -> None:
        self._account_changed = True

    def positions(self) -> list[BrokerPosition]:
        out = []
        for p in self._call("positions", self._trading.get_all_positions):
            crypto = str(getattr(p.asset_class, "value", p.asset_class)) == "crypto"
            qty = abs(_f(p.qty)) * (-1 if str(getattr(p.side, "value", p.side)) == "short" else 1)
            out.append(BrokerPosition(_our_symbol(p.symbol, crypto), qty, _f(p.avg_entry_price), _f(p.current_price)))
        return out

    def asset(self, symbol: str) -> AssetRules:
        cached = self._assets.get(symbol)
        if cached is None or time.monotonic() - cached[0] > ASSET_TTL_S:
            a = self._get_or_none("asset", lambda: self._trading.get(f"/assets/{symbol}"))
            if a is None:
                raise OrderRejected(f"alpaca knows no asset {symbol!r}")
            cached = self._assets[symbol] = (time.monotonic(), _rules(a))
        rules = cached[1]
        if is_crypto(symbol):
            return rules
        return AssetRules(**{**rules.__dict__, "market_open": self._market_open()})

    def _market_open(self) -> bool:
        now = self.now()
        if now >= self._clock[0]:
            clock = self._call("clock", self._trading.get_clock)
            change = clock.next_close if clock.is_open else clock.next_open
            self._clock = (min(change, now + timedelta(seconds=CLOCK_TTL_S)), bool(clock.is_open))
        return self._clock[1]

    def history(self, symbol: str, count: int) -> Series:
        """The last `count` completed bars (the bar still forming is left out), cached until the next bar closes."""
        if not self._history_cached(symbol, count):
            self._cache_history(self._bars([symbol], self._timeframe, count=count), count)
        return _tail(self._history[symbol][2], count)

    def prefetch(self, symbols: list[str], count: int) -> None:
        """Cache the bars and asset rules of many symbols at once (a worker's batch of signals): one bars request
        per asset class (pages of up to 10,000 bars) and, when any rules are missing, one list of every active
        asset, instead of two requests per symbol."""
        missing = sorted({s for s in symbols if not self._history_cached(s, count)})
        if missing:
            self._cache_history(self._bars(missing, self._timeframe, count=count), count)
        now = time.monotonic()
        if now - self._listed_at > ASSET_TTL_S and any(
                s not in self._assets or now - self._assets[s][0] > ASSET_TTL_S for s in symbols):
            listed = self._call("assets", lambda: self._trading.get("/assets", {"status": "active"}))
            self._assets.update({a["symbol"]: (now, _rules(a)) for a in listed})
            self._listed_at = now  # a symbol not listed is looked up alone (asset), not by listing them all again

    def _history_cached(self, symbol: str, count: int) -> bool:
        cached = self._history.get(symbol)
        return cached is not None and cached[1] >= count and self.now() < cached[0]

    def _cache_history(self, bars: dict[str, Series], count: int) -> None:
        """Each symbol's bars are good until its next bar closes (the one after the forming bar)."""
        now = self.now()
        floor = now + timedelta(seconds=HISTORY_MIN_TTL_S)
        step = _timeframe_length(self._timeframe)
        for symbol, series in bars.items():
            closes = series.ts[-1].astype(datetime).replace(tzinfo=timezone.utc) + 2 * step if len(series) else floor
            self._history[symbol] = (max(closes, floor), count, series)

    def bars(self, symbol: str, timeframe: str, start: datetime) -> Series:
        """The BarHistory port: completed bars of a timeframe named in TIMEFRAMES."""
        return self._bars([symbol], TIMEFRAMES[timeframe][0], start=start)[symbol]

    def _bars(self, symbols: list[str], timeframe: TimeFrame, *, count: int | None = None,
              start: datetime | None = None, completed: bool = True) -> dict[str, Series]:
        """Each symbol's bars from `start` (or its last `count`) to now, through the data API with the broker's
        retries (one request per asset class, paged by alpaca-py); `completed`: without the bar still forming."""
        end = self.now()
        if start is None:
            start = end - timedelta(days=count * self._bar_days * 1.6 + 10)  # weekends and holidays
        rows: dict[str, list[dict]] = {}
        for crypto in (False, True):
            group = [s for s in symbols if is_crypto(s) == crypto]
            if not group:
                continue
            kwargs = dict(symbol_or_symbols=group, timeframe=timeframe, start=start, end=end)
            if crypto:
                bars = self._call("crypto bars", lambda: self._crypto.get_crypto_bars(CryptoBarsRequest(**kwargs)))
            else:
                request = StockBarsRequest(**kwargs, feed=self._feed)
                bars = self._call("stock bars", lambda: self._stocks.get_stock_bars(request))
            rows.update(bars)
        return {s: _series(s, rows.get(s, []), timeframe, end, count, completed) for s in symbols}

    def price_range(self, symbol: str, since: datetime) -> tuple[float, float] | None:
        """From minute bars, the forming one included (its trades happened), fetched incrementally: each
        poll asks only from the last minute it saw."""
        seen_since, low, high, fetch_from = self._ranges.get(symbol, (since, np.inf, -np.inf, since))
        if seen_since != since:  # another trade in the symbol (one active trade per symbol): start afresh
            low, high, fetch_from = np.inf, -np.inf, since
        bars = self._bars([symbol], TimeFrame(1, TimeFrameUnit.Minute), start=fetch_from, completed=False)[symbol]
        if len(bars):
            low, high = min(low, float(bars.low.min())), max(high, float(bars.high.max()))
            fetch_from = bars.ts[-1].astype(datetime).replace(tzinfo=timezone.utc)
        self._ranges[symbol] = (since, low, high, fetch_from)
        return None if low == np.inf else (low, high)

    def find_order(self, client_order_id: str) -> OrderAck | None:
        order = self._get_or_none("order lookup", lambda: self._trading.get_order_by_client_id(client_order_id))
        return to_ack(order) if order is not None else None

    def open_orders(self) -> list[OrderAck]:
        request = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=500)
        return [to_ack(o) for o in self._call("open orders", lambda: self._trading.get_orders(request))]

    def closing_fill(self, symbol: str, side: Side, since: datetime) -> Fill | None:
        # legs are submitted with their parent, before the position opened: ask from a day earlier
        request = GetOrdersRequest(status=QueryOrderStatus.CLOSED, symbols=[symbol], side=OrderSide(side.value),
                                   after=since - timedelta(days=1), limit=100)
        for order in map(to_ack, self._call("closed orders", lambda: self._trading.get_orders(request))):
            if order.status == "filled" and order.updated_at is not None and order.updated_at >= since:
                return order.as_fill()
        return None

    def submit(self, order: OrderRequest) -> OrderAck:
        """Idempotent on client_order_id. An entry goes straight out: Alpaca refuses a second order with the
        same client id, and that refusal is answered with the first order. An exit is looked up first, since
        preparing it cancels the symbol's open orders, which would include an exit already working."""
        quantity = order.quantity
        if order.reduce_only:
            existing = self.find_order(order.client_order_id)
            if existing is not None:
                return existing
            quantity = self._reducible(order)
        request = self._order_request(order, quantity)
        try:
            placed = self._call("submit", lambda: self._trading.submit_order(request),
                                recover=lambda: self.find_order(order.client_order_id), order=True)
        except OrderRejected as exc:
            existing = self.find_order(order.client_order_id) if DUPLICATE_ID in str(exc) else None
            if existing is None:
                raise
            return existing
        return placed if isinstance(placed, OrderAck) else to_ack(placed)

    def _reducible(self, order: OrderRequest) -> float:
        """An exit may only shrink the position it closes (a plain sell at Alpaca would open a short). Our
        open orders in the symbol (a bracket's legs) hold its shares, so they are canceled first."""
        held = next((p.quantity for p in self.positions() if p.symbol == order.symbol), 0.0)
        if held * order.side.sign >= 0:
            raise OrderRejected(f"no {order.side.opposite.value} position in {order.symbol} to reduce")
        for working in self.open_orders():
            if working.symbol == order.symbol:
                self._get_or_none("cancel", lambda: self._trading.cancel_order_by_id(working.broker_order_id),
                                  order=True)
        return min(order.quantity, abs(held))

    def _order_request(self, order: OrderRequest, quantity: float) -> MarketOrderRequest:
        crypto = is_crypto(order.symbol)
        fields = dict(symbol=order.symbol, side=OrderSide(order.side.value), type=OrderType.MARKET,
                      client_order_id=order.client_order_id)
        whole = float(quantity).is_integer()
        if order.reduce_only or crypto or order.stop_price is None or not whole:
            tif = TimeInForce.GTC if crypto else TimeInForce.DAY
            return MarketOrderRequest(**fields, qty=round(quantity, 9), time_in_force=tif)
        stop = StopLossRequest(stop_price=_price(order.stop_price))
        if order.target_price is None:
            return MarketOrderRequest(**fields, qty=int(quantity), time_in_force=TimeInForce.GTC,
                                      order_class=OrderClass.OTO, stop_loss=stop)
        return MarketOrderRequest(**fields, qty=int(quantity), time_in_force=TimeInForce.GTC,
                                  order_class=OrderClass.BRACKET, stop_loss=stop,
                                  take_profit=TakeProfitRequest(limit_price=_price(order.target_price)))


def _timeframe_length(timeframe: TimeFrame) -> timedelta:
    unit = {TimeFrameUnit.Minute: timedelta(minutes=1), TimeFrameUnit.Hour: timedelta(hours=1),
            TimeFrameUnit.Day: timedelta(days=1)}[timeframe.unit_value]
    return unit * timeframe.amount_value


def _series(symbol: str, rows: list[dict], timeframe: TimeFrame, end: datetime, count: int | None,
            completed: bool) -> Series:
    """Raw bars {t, o, h, l, c, v} as arrays: parsing one pydantic model per bar is slow, and so is letting pandas
    guess the (RFC 3339) time format of each batch."""
    ts = pd.to_datetime([b["t"] for b in rows], utc=True, format="ISO8601").tz_localize(None).to_numpy("datetime64[s]")
    keep = np.arange(len(ts))
    if completed:
        keep = keep[ts + np.timedelta64(_timeframe_length(timeframe)) <= np.datetime64(end.replace(tzinfo=None))]
    if count is not None:
        keep = keep[-count:]
    return Series(symbol, ts[keep], *(np.array([b[k] for b in rows], dtype=float)[keep] for k in "ohlcv"))


def _rules(a: dict) -> AssetRules:
    """An asset as Alpaca's JSON describes it (crypto trades fractionally, unleveraged, long only)."""
    crypto = a.get("class") == "crypto"
    return AssetRules(
        tradable=bool(a.get("tradable")) and a.get("status") == "active",
        fractionable=crypto and bool(a.get("fractionable")),
        shortable=not crypto and bool(a.get("shortable")) and bool(a.get("easy_to_borrow")),
        marginable=not crypto and bool(a.get("marginable")),
        broker_stops=not crypto,
    )


def _tail(s: Series, count: int) -> Series:
    return Series(s.symbol, s.ts[-count:], s.open[-count:], s.high[-count:], s.low[-count:], s.close[-count:],
                  s.volume[-count:])


class TradeUpdates:
    """Alpaca's trade-update stream on its own thread: TradingStream.run() calls asyncio.run, so it cannot
    share the server's event loop. Each update becomes a Fill or OrderEnded handed to `on_event`."""

    def __init__(self, settings: AlpacaSettings, on_event: Callable[[Fill | OrderEnded], None]) -> None:
        self._stream = TradingStream(settings.api_key_id.get_secret_value(),
                                     settings.api_secret_key.get_secret_value(),
                                     paper=settings.paper, url_override=settings.stream_url)
        self._on_event = on_event
        # at DEBUG, websockets logs every frame sent, the authentication frame with the secret key included
        logging.getLogger("websockets.client").setLevel(max(logging.INFO, logging.getLogger().getEffectiveLevel()))
        self._thread = threading.Thread(target=self._stream.run, name="alpaca-trade-updates", daemon=True)

    def start(self) -> None:
        self._stream.subscribe_trade_updates(self._handle)
        self._thread.start()

    def stop(self) -> None:
        loop = self._stream._loop  # set once run() has started
        if loop is not None and loop.is_running():
            self._stream.stop()
            # the stream notices a stop only between 5 s receive timeouts; closing the socket wakes it now
            asyncio.run_coroutine_threadsafe(self._stream.close(), loop).result(timeout=5)
        self._thread.join(timeout=10)

    async def _handle(self, update: TradeUpdate) -> None:
        event = to_event(update)
        if event is None:
            return
        try:
            await asyncio.to_thread(self._on_event, event)
        except Exception:  # one bad event must not end the stream; reconciliation repairs what it missed
            log.exception("handling trade update %s of %s failed", update.event, update.order.client_order_id)


def to_event(update: TradeUpdate) -> Fill | OrderEnded | None:
    kind = str(getattr(update.event, "value", update.event))
    ack = to_ack(update.order)
    if kind in ("fill", "partial_fill"):
        fill = ack.as_fill()
        return Fill(**{**fill.__dict__, "ts": update.timestamp, "final": kind == "fill"})
    if kind in ENDED:
        return OrderEnded(ack.client_order_id, ack.symbol, ack.side, ENDED[kind], ack.filled_quantity,
                          f"{kind} by the broker", update.timestamp)
    return None
