"""Test adapters for ports (pure unit tests only; integration tests use the real ones)."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from backend.brokers.base import BrokerPosition, OrderAck, OrderRequest
from backend.data.bundled import Series
from backend.domain.model import Account, AssetRules


def random_walk(n: int = 200, start: float = 100.0, vol: float = 0.01, seed: int = 0, symbol: str = "TEST") -> Series:
    rng = np.random.default_rng(seed)
    close = start * np.exp(np.cumsum(rng.normal(0, vol, n)))
    open_ = np.concatenate([[start], close[:-1]])
    spread = np.abs(rng.normal(0, vol, n)) * close
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    ts = np.datetime64("2010-01-01", "s") + np.arange(n) * np.timedelta64(1, "D")
    return Series(symbol, ts, open_, high, low, close, np.zeros(n))


class StaticBroker:
    """A broker frozen at one moment: a given account and bar history; records what it is sent."""

    name = "static"
    io_bound = False

    def __init__(self, account: Account, series: Series, asset: AssetRules = AssetRules()) -> None:
        self._account = account
        self._series = series
        self._asset = asset
        self.orders: list[OrderRequest] = []

    def now(self) -> datetime:
        return datetime(2020, 1, 1, tzinfo=timezone.utc)

    def health(self) -> str:
        return "ok (static)"

    def account(self) -> Account:
        return self._account

    def positions(self) -> list[BrokerPosition]:
        return []

    def history(self, symbol: str, count: int) -> Series:
        s = self._series
        return Series(symbol, s.ts[-count:], s.open[-count:], s.high[-count:], s.low[-count:], s.close[-count:],
                      s.volume[-count:])

    def submit(self, order: OrderRequest) -> OrderAck:
        self.orders.append(order)
        return OrderAck(order.client_order_id, order.client_order_id, "accepted", order.symbol, order.side)

    def find_order(self, client_order_id: str) -> OrderAck | None:
        return None

    def asset(self, symbol: str) -> AssetRules:
        return self._asset
