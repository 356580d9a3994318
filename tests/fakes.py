"""Test adapters for ports (pure unit tests only; integration tests use the real ones)."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from backend.brokers.base import BrokerPosition, OrderAck, OrderRequest
from backend.domain.bars import Series
from backend.domain.model import Account, AssetRules
from backend.domain.state import ROOT_KEY, action_key
from backend.sizing.qlearning import Cell, Learning


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


class MemoryQTable:
    """The QTable port in memory, adding a Learning's rewards as the store does (decayed sums)."""

    def __init__(self, epsilon: float = 0.0) -> None:
        self.cells: dict[str, dict[str, Cell]] = {}
        self.epsilon = epsilon

    def q_cells(self, state_keys):
        return {k: dict(self.cells[k]) for k in state_keys if k in self.cells}, self.epsilon

    def add(self, learning: Learning) -> None:
        d = learning.decay
        for state, action, r in learning.rewards:
            c = self.cells.setdefault(state, {}).get(action, Cell())
            self.cells[state][action] = Cell(c.weight * d + 1, c.reward_sum * d + r, c.reward_sq_sum * d + r * r,
                                             c.visits + 1)


def experienced_cells(menu, trades: int = 2000, edge: float = 0.003, vol: float = 0.015) -> dict:
    """Q-table cells (all trades' level) as if `trades` trades had returned `edge` per unit of exposure on
    average with volatility `vol`: a clear edge, so a Q agent sizes instead of skipping."""
    cells = {}
    for e in menu:
        mean = 100 * (e * edge - (e * vol) ** 2 / 2)
        cells[(ROOT_KEY, action_key(e))] = Cell(trades, mean * trades, (mean**2 + (100 * e * vol) ** 2) * trades,
                                                trades)
    return cells
