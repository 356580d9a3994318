"""A fake Alpaca on 127.0.0.1: the trading, market-data and trade-update endpoints sizer uses, answering with
JSON shaped as Alpaca documents it, so the real alpaca-py clients can be pointed at it (url_override).

Orders wait until the test fills them (`fill`), or fill at once at the symbol's price with `auto_fill`.
Bracket and OTO legs are held until their parent fills, then `move(symbol, price)` triggers them (one
cancels the other). Faults are injected per request (`fail_next`, `delay_next_submit`). Like the real
service, every request may take `latency_s` (+- `jitter_s`, uniform) and be held to `rate_limit_per_minute`
(a bucket of `rate_burst` requests; over it: 429 with X-RateLimit-* headers, counted in `throttled`).
"""
from __future__ import annotations

import asyncio
import functools
import json
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import uvicorn
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response

from tests.fakes import random_walk

UTC = timezone.utc
DAILY_WALK = random_walk(400, seed=7)  # every symbol's daily bars: this walk, scaled to end at its price


def iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z") if ts else None


def daily_times() -> list[datetime]:
    """When the fake's daily bars open: the weekdays (Alpaca's bars are trading days') of the last 400 days."""
    day0 = datetime.now(UTC).replace(hour=5, minute=0, second=0, microsecond=0) - timedelta(days=400)
    return [d for d in (day0 + timedelta(days=i) for i in range(400)) if d.weekday() < 5]


@functools.lru_cache(maxsize=256)
def _daily_json(price: float, day0: datetime, first: int) -> str:
    """The bars from the `first`-th daily time on (day0: the first, which keys the cache)."""
    days = daily_times()
    walk, scale = DAILY_WALK, price / DAILY_WALK.close[len(days) - 1]  # the last close at the symbol's price
    return json.dumps([{"t": iso(days[i]), "o": walk.open[i] * scale, "h": walk.high[i] * scale,
                        "l": walk.low[i] * scale, "c": walk.close[i] * scale, "v": 1e6, "n": 1000,
                        "vw": walk.close[i] * scale} for i in range(first, len(days))])


def error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


@dataclass
class Asset:
    symbol: str
    crypto: bool = False
    fractionable: bool = True
    shortable: bool = True
    marginable: bool = True
    price: float = 100.0

    def json(self) -> dict:
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.symbol)), "class": "crypto" if self.crypto else "us_equity",
            "exchange": "CRYPTO" if self.crypto else "ARCA", "symbol": self.symbol, "name": self.symbol,
            "status": "active", "tradable": True, "marginable": self.marginable and not self.crypto,
            "shortable": self.shortable and not self.crypto, "easy_to_borrow": self.shortable and not self.crypto,
            "fractionable": self.fractionable, "maintenance_margin_requirement": 30, "attributes": [],
        }


@dataclass
class FakeOrder:
    symbol: str
    side: str
    qty: float
    client_order_id: str
    type: str = "market"
    order_class: str = "simple"
    time_in_force: str = "day"
    stop_price: float | None = None
    limit_price: float | None = None
    status: str = "new"
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    parent: str | None = None
    legs: list["FakeOrder"] = field(default_factory=list)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    crypto: bool = False

    @property
    def open(self) -> bool:
        return self.status in ("new", "accepted", "held", "partially_filled")

    def json(self) -> dict:
        return {
            "id": self.id, "client_order_id": self.client_order_id, "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at), "submitted_at": iso(self.created_at), "filled_at": iso(self.filled_at),
            "expired_at": None, "canceled_at": iso(self.canceled_at), "failed_at": None, "replaced_at": None,
            "replaced_by": None, "replaces": None, "asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.symbol)),
            "symbol": self.symbol, "asset_class": "crypto" if self.crypto else "us_equity", "notional": None,
            "qty": f"{self.qty:g}", "filled_qty": f"{self.filled_qty:g}",
            "filled_avg_price": None if self.filled_avg_price is None else f"{self.filled_avg_price:.4f}",
            "order_class": self.order_class, "order_type": self.type, "type": self.type, "side": self.side,
            "time_in_force": self.time_in_force, "limit_price": self.limit_price, "stop_price": self.stop_price,
            "status": self.status, "extended_hours": False,
            "legs": [leg.json() for leg in self.legs] or None, "trail_percent": None, "trail_price": None,
            "hwm": None, "position_intent": f"{self.side}_to_{'close' if self.parent else 'open'}",
        }


class FakeAlpaca:
    def __init__(self, *, cash: float = 100_000.0, multiplier: float = 4.0, shorting: bool = True,
                 latency_s: float = 0.0, jitter_s: float = 0.0, rate_limit_per_minute: float | None = None,
                 rate_burst: int = 20) -> None:
        self.cash, self.multiplier, self.shorting = cash, multiplier, shorting
        self.latency_s, self.jitter_s = latency_s, jitter_s
        self.rate_limit_per_minute, self.rate_burst = rate_limit_per_minute, rate_burst
        self._tokens, self._refilled = float(rate_burst), time.monotonic()
        self.throttled = 0  # requests answered 429
        self.market_open = True
        self.auto_fill = False
        self.assets = {"SPY": Asset("SPY", price=100.0, fractionable=True),
                       "BTC/USD": Asset("BTC/USD", crypto=True, price=100.0)}
        self.orders: dict[str, FakeOrder] = {}
        self.positions: dict[str, tuple[float, float]] = {}  # symbol -> (signed qty, avg entry)
        self.trades: dict[str, list[tuple[datetime, float]]] = {}  # symbol -> prices traded (minute bars)
        self.bar_requests: list[tuple[str, str, str]] = []  # (symbols, timeframe, start) as asked
        self.requests: list[tuple[str, str]] = []
        self._failures: list[tuple[str, str, int, str]] = []  # (method, path prefix, status, message)
        self._submit_delay = 0.0
        self._lock = threading.RLock()
        self._sockets: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []
        self.app = self._build()
        self._server: uvicorn.Server | None = None
        self.port = 0

    # --- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> "FakeAlpaca":
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True).start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "fake Alpaca did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server:
            self._server.should_exit = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    def settings(self) -> dict:
        """The settings that point sizer's Alpaca broker here."""
        return dict(broker="alpaca", alpaca_api_key_id="PKTEST", alpaca_api_secret_key="secret-test",
                    alpaca_trading_url=self.url, alpaca_data_url=self.url, alpaca_stream_url=self.stream_url,
                    alpaca_timeout_seconds=0.5, alpaca_max_retries=3,
                    alpaca_rate_limit_per_minute=self.rate_limit_per_minute or 600_000)  # no limit: none to keep

    @property
    def streaming(self) -> bool:
        return bool(self._sockets)

    # --- faults ------------------------------------------------------------------------------------------
    def fail_next(self, method: str, path: str, status: int, message: str = "injected", times: int = 1) -> None:
        with self._lock:
            self._failures += [(method, path, status, message)] * times

    def delay_next_submit(self, seconds: float) -> None:
        """The next order is created at once but answered only after `seconds`: the client times out."""
        self._submit_delay = seconds

    def _over_limit(self) -> float | None:
        """Take a token from the rate-limit bucket; without one, the seconds until the next."""
        if self.rate_limit_per_minute is None:
            return None
        rate = self.rate_limit_per_minute / 60
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.rate_burst, self._tokens + (now - self._refilled) * rate)
            self._refilled = now
            if self._tokens >= 1:
                self._tokens -= 1
                return None
            self.throttled += 1
            return (1 - self._tokens) / rate

    # --- the market, driven by the test -------------------------------------------------------------------
    def by_cid(self, client_order_id: str) -> FakeOrder:
        return next(o for o in self.orders.values() if o.client_order_id == client_order_id)

    def fill(self, client_order_id: str, qty: float | None = None, price: float | None = None,
             notify: bool = True) -> None:
        """Execute `qty` more of the order (all that is left by default) at `price`."""
        with self._lock:
            order = self.by_cid(client_order_id)
            self._execute(order, qty if qty is not None else order.qty - order.filled_qty,
                          price if price is not None else self.assets[order.symbol].price, notify)

    def move(self, symbol: str, price: float, notify: bool = True) -> None:
        """The price moves: a working stop or take-profit leg it crosses fills, and its sibling is canceled."""
        with self._lock:
            self.assets[symbol].price = price
            self.trades.setdefault(symbol, []).append((datetime.now(UTC), price))
            for order in list(self.orders.values()):
                if order.parent is None or not order.open or order.status == "held" or order.symbol != symbol:
                    continue
                sell = order.side == "sell"
                hit = (order.type == "stop" and (price <= order.stop_price if sell else price >= order.stop_price)) or \
                      (order.type == "limit" and (price >= order.limit_price if sell else price <= order.limit_price))
                if hit:
                    self._execute(order, order.qty - order.filled_qty, price, notify)
                    for sibling in self.orders[order.parent].legs:
                        if sibling.open:
                            self._cancel(sibling, notify)
                    return

    def close_by_hand(self, symbol: str, price: float, notify: bool = True) -> FakeOrder:
        """Someone closes the position in Alpaca's dashboard: open orders in it are canceled, then it is sold."""
        with self._lock:
            qty, _ = self.positions[symbol]
            for order in list(self.orders.values()):
                if order.symbol == symbol and order.open:
                    self._cancel(order, notify)
            order = FakeOrder(symbol, "sell" if qty > 0 else "buy", abs(qty), str(uuid.uuid4()),
                              crypto=self.assets[symbol].crypto)
            self.orders[order.id] = order
            self._execute(order, abs(qty), price, notify)
            return order

    def cancel(self, client_order_id: str, notify: bool = True, status: str = "canceled") -> None:
        with self._lock:
            self._cancel(self.by_cid(client_order_id), notify, status)

    def _execute(self, order: FakeOrder, qty: float, price: float, notify: bool) -> None:
        now = datetime.now(UTC)
        self.trades.setdefault(order.symbol, []).append((now, price))
        total = order.filled_qty + qty
        order.filled_avg_price = ((order.filled_avg_price or 0.0) * order.filled_qty + price * qty) / total
        order.filled_qty = total
        order.status = "filled" if total >= order.qty - 1e-12 else "partially_filled"
        order.updated_at = now
        order.filled_at = now if order.status == "filled" else None
        signed = qty if order.side == "buy" else -qty
        held, avg = self.positions.get(order.symbol, (0.0, 0.0))
        self.cash -= signed * price
        new = held + signed
        if abs(new) < 1e-12:
            self.positions.pop(order.symbol, None)
        else:
            same_way = held == 0 or np.sign(held) == np.sign(signed)
            self.positions[order.symbol] = (new, (avg * held + price * signed) / new if same_way else avg)
        if order.status == "filled":
            for leg in order.legs:
                leg.status = "new"
        if notify:
            self._push("fill" if order.status == "filled" else "partial_fill", order, price=price, qty=qty)

    def _cancel(self, order: FakeOrder, notify: bool, status: str = "canceled") -> None:
        order.status, order.canceled_at, order.updated_at = status, datetime.now(UTC), datetime.now(UTC)
        if notify:
            self._push(status, order)

    def _push(self, event: str, order: FakeOrder, price: float | None = None, qty: float | None = None) -> None:
        held = self.positions.get(order.symbol, (0.0, 0.0))[0]
        data = {"event": event, "order": order.json(), "timestamp": iso(datetime.now(UTC)),
                "position_qty": f"{held:g}"}
        if event in ("fill", "partial_fill"):
            data.update(execution_id=str(uuid.uuid4()), price=f"{price:.4f}", qty=f"{qty:g}")
        message = json.dumps({"stream": "trade_updates", "data": data})
        for loop, queue in list(self._sockets):
            loop.call_soon_threadsafe(queue.put_nowait, message)

    # --- account ---------------------------------------------------------------------------------------
    def account_json(self) -> dict:
        long = sum(q * self.assets[s].price for s, (q, _) in self.positions.items() if q > 0)
        short = sum(q * self.assets[s].price for s, (q, _) in self.positions.items() if q < 0)
        equity = self.cash + long + short
        bp = max(0.0, equity * self.multiplier - long + short)
        return {
            "id": "a1b2c3d4-0000-4000-8000-000000000001", "account_number": "PA3FAKE00001", "status": "ACTIVE",
            "crypto_status": "ACTIVE", "currency": "USD", "cash": f"{self.cash:.2f}", "buying_power": f"{bp:.2f}",
            "regt_buying_power": f"{bp / 2:.2f}", "non_marginable_buying_power": f"{max(0.0, self.cash):.2f}",
            "accrued_fees": "0", "pending_transfer_in": "0", "portfolio_value": f"{equity:.2f}",
            "trading_blocked": False, "transfers_blocked": False, "account_blocked": False,
            "created_at": "2024-01-02T15:00:00Z", "trade_suspended_by_user": False,
            "multiplier": f"{self.multiplier:g}", "shorting_enabled": self.shorting, "equity": f"{equity:.2f}",
            "last_equity": f"{equity:.2f}", "long_market_value": f"{long:.2f}", "short_market_value": f"{short:.2f}",
            "initial_margin": "0", "maintenance_margin": "0", "last_maintenance_margin": "0", "sma": "0",
            "daytrade_count": 0,
        }

    def position_json(self, symbol: str) -> dict:
        qty, avg = self.positions[symbol]
        asset = self.assets[symbol]
        value = qty * asset.price
        return {
            "asset_id": asset.json()["id"], "symbol": symbol.replace("/", ""), "exchange": asset.json()["exchange"],
            "asset_class": asset.json()["class"], "asset_marginable": asset.marginable, "avg_entry_price": f"{avg}",
            "qty": f"{qty:g}", "side": "long" if qty > 0 else "short", "market_value": f"{value:.2f}",
            "cost_basis": f"{qty * avg:.2f}", "unrealized_pl": f"{value - qty * avg:.2f}", "unrealized_plpc": "0",
            "unrealized_intraday_pl": "0", "unrealized_intraday_plpc": "0", "current_price": f"{asset.price}",
            "lastday_price": f"{asset.price}", "change_today": "0", "qty_available": f"{qty:g}",
        }

    def bars_json(self, symbol: str, timeframe: str, start: datetime) -> str:
        """A symbol's bars from `start`, as Alpaca's JSON list. Daily bars: a random walk ending at yesterday's
        close at the symbol's price (encoded once per price and day: the benchmarks ask for thousands of
        symbols, and the fake shares their cores). Minute bars: the prices traded here (fills and `move`s),
        the forming minute included."""
        if timeframe == "1Min":
            minutes: dict[datetime, list[float]] = {}
            for ts, p in self.trades.get(symbol, []):
                minute = ts.replace(second=0, microsecond=0)
                if minute >= start.replace(second=0, microsecond=0):
                    minutes.setdefault(minute, []).append(p)
            return json.dumps([{"t": iso(m), "o": ps[0], "h": max(ps), "l": min(ps), "c": ps[-1], "v": len(ps),
                                "n": len(ps), "vw": sum(ps) / len(ps)} for m, ps in sorted(minutes.items())])
        days = daily_times()
        return _daily_json(self.assets[symbol].price, days[0], next((i for i, d in enumerate(days) if d >= start),
                                                                    len(days)))

    # --- HTTP ------------------------------------------------------------------------------------------
    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def faults(request: Request, call_next):
            path = request.url.path
            self.requests.append((request.method, path))
            if self.latency_s or self.jitter_s:
                await asyncio.sleep(max(0.0, self.latency_s + random.uniform(-self.jitter_s, self.jitter_s)))
            if request.headers.get("APCA-API-KEY-ID") != "PKTEST":
                return error(401, 40110000, "request is not authorized")
            wait = self._over_limit()
            if wait is not None:
                answer = error(429, 42910000, "rate limit exceeded")
                answer.headers.update({"X-RateLimit-Limit": f"{self.rate_limit_per_minute:g}",
                                       "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": f"{time.time() + wait:.3f}"})
                return answer
            with self._lock:
                hit = next((f for f in self._failures if f[0] == request.method and path.startswith(f[1])), None)
                if hit:
                    self._failures.remove(hit)
            if hit:
                return error(hit[2], hit[2] * 100000, hit[3])
            return await call_next(request)

        @app.get("/v2/account")
        def account():
            return self.account_json()

        @app.get("/v2/clock")
        def clock():
            now = datetime.now(UTC)
            return {"timestamp": iso(now), "is_open": self.market_open, "next_open": iso(now + timedelta(hours=16)),
                    "next_close": iso(now + timedelta(hours=6))}

        @app.get("/v2/assets")
        def assets(status: str | None = None):
            return [a.json() for a in self.assets.values()]

        @app.get("/v2/assets/{symbol:path}")
        def asset(symbol: str):
            if symbol not in self.assets:
                return error(404, 40410000, "asset not found")
            return self.assets[symbol].json()

        @app.get("/v2/positions")
        def positions():
            return [self.position_json(s) for s in self.positions]

        @app.post("/v2/orders")
        async def submit(request: Request):
            body = await request.json()
            with self._lock:
                if any(o.client_order_id == body.get("client_order_id") for o in self.orders.values()):
                    return error(422, 40010001, "client_order_id must be unique")
                asset = self.assets.get(body["symbol"])
                if asset is None:
                    return error(422, 42210000, f"asset {body['symbol']} not found")
                qty = float(body["qty"])
                if body.get("order_class") in ("bracket", "oto") and not qty.is_integer():
                    return error(422, 42210000, "fractional orders must be simple orders")
                if asset.crypto and body["side"] == "sell" and self.positions.get(asset.symbol, (0, 0))[0] <= 0:
                    return error(403, 40310000, "insufficient balance for sell")
                if qty * asset.price > float(self.account_json()["buying_power"]) and not self._reduces(body):
                    return error(403, 40310000, "insufficient buying power")
                order = FakeOrder(body["symbol"], body["side"], qty, body.get("client_order_id") or str(uuid.uuid4()),
                                  order_class=body.get("order_class", "simple"), time_in_force=body["time_in_force"],
                                  crypto=asset.crypto)
                exit_side = "sell" if body["side"] == "buy" else "buy"
                if body.get("take_profit"):
                    order.legs.append(FakeOrder(order.symbol, exit_side, qty, str(uuid.uuid4()), type="limit",
                                                limit_price=float(body["take_profit"]["limit_price"]), status="held",
                                                parent=order.id, time_in_force="gtc"))
                if body.get("stop_loss"):
                    order.legs.append(FakeOrder(order.symbol, exit_side, qty, str(uuid.uuid4()), type="stop",
                                                stop_price=float(body["stop_loss"]["stop_price"]), status="held",
                                                parent=order.id, time_in_force="gtc"))
                self.orders[order.id] = order
                for leg in order.legs:
                    self.orders[leg.id] = leg
                self._push("new", order)
                if self.auto_fill:
                    self._execute(order, qty, asset.price, notify=True)
                answer = order.json()
            if self._submit_delay:
                delay, self._submit_delay = self._submit_delay, 0.0
                await asyncio.sleep(delay)
            return answer

        @app.get("/v2/orders:by_client_order_id")
        def by_client_id(client_order_id: str):
            found = [o for o in self.orders.values() if o.client_order_id == client_order_id]
            return found[0].json() if found else error(404, 40410000, "order not found")

        @app.get("/v2/orders")
        def orders(status: str = "open", symbols: str | None = None, side: str | None = None,
                   after: str | None = None, limit: int = 50):
            chosen = [o for o in self.orders.values()
                      if (status == "all" or (status == "open") == o.open)
                      and (symbols is None or o.symbol in symbols.split(","))
                      and (side is None or o.side == side)
                      and (after is None or o.created_at > datetime.fromisoformat(after.replace("Z", "+00:00")))]
            return [o.json() for o in sorted(chosen, key=lambda o: o.created_at, reverse=True)[:limit]]

        @app.delete("/v2/orders/{order_id}")
        def cancel(order_id: str):
            with self._lock:
                order = self.orders.get(order_id)
                if order is None:
                    return error(404, 40410000, "order not found")
                if not order.open:
                    return error(422, 42210000, f"order is already {order.status}")
                self._cancel(order, notify=True)
            return Response(status_code=204)

        @app.get("/v2/stocks/bars")
        @app.get("/v1beta3/crypto/us/bars")
        def bars(symbols: str, timeframe: str, start: str):
            self.bar_requests.append((symbols, timeframe, start))
            begin = datetime.fromisoformat(start.replace("Z", "+00:00"))
            bars = ", ".join(f"{json.dumps(s)}: {self.bars_json(s, timeframe, begin)}"
                             for s in symbols.split(",") if s in self.assets)
            return Response(f'{{"bars": {{{bars}}}, "next_page_token": null}}', media_type="application/json")

        @app.websocket("/stream")
        async def stream(ws: WebSocket):
            await ws.accept()
            auth = json.loads(await ws.receive_text())
            ok = auth.get("data", {}).get("key_id") == "PKTEST"
            await ws.send_text(json.dumps({"stream": "authorization", "data": {
                "status": "authorized" if ok else "unauthorized", "action": "authenticate"}}))
            if not ok:
                return await ws.close()
            listen = json.loads(await ws.receive_text())
            await ws.send_text(json.dumps({"stream": "listening", "data": listen["data"]}))
            entry = (asyncio.get_running_loop(), asyncio.Queue())
            self._sockets.append(entry)
            try:
                while True:
                    await ws.send_text(await entry[1].get())
            except (WebSocketDisconnect, RuntimeError):
                pass
            finally:
                self._sockets.remove(entry)

        return app

    def _reduces(self, body: dict) -> bool:
        held = self.positions.get(body["symbol"], (0.0, 0.0))[0]
        return held != 0 and (held > 0) == (body["side"] == "sell")
