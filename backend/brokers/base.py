"""The Broker port: what the executor, risk manager and monitor may ask of a broker."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from backend.data.bundled import Series
from backend.domain.model import Account, Side


@dataclass(frozen=True)
class OrderRequest:
    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    stop_price: float | None = None  # bracket legs, attached to the position the order opens
    target_price: float | None = None
    reduce_only: bool = False  # closes an existing position, never opens one


@dataclass(frozen=True)
class OrderAck:
    client_order_id: str
    broker_order_id: str
    status: str  # accepted | filled | rejected | canceled


@dataclass(frozen=True)
class BrokerPosition:
    symbol: str
    quantity: float  # signed: negative is short
    avg_entry_price: float
    market_price: float


class OrderRejected(Exception):
    """The broker refused the order; the message is the broker's."""


class Broker(Protocol):
    name: str
    io_bound: bool  # True: calls go over the network, so async callers must run them in a thread pool

    def now(self) -> datetime: ...

    def account(self) -> Account: ...

    def positions(self) -> list[BrokerPosition]: ...

    def history(self, symbol: str, count: int) -> Series:
        """The last `count` completed bars of `symbol`, oldest first."""

    def submit(self, order: OrderRequest) -> OrderAck:
        """Idempotent on client_order_id: a second submit returns the first order."""

    def find_order(self, client_order_id: str) -> OrderAck | None: ...

    def allows_fractional(self, symbol: str) -> bool: ...

