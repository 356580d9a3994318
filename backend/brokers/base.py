"""The Broker port: what the executor, risk manager and monitor may ask of a broker."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

import numpy as np

from backend.domain.bars import Series
from backend.domain.model import Account, AssetRules, Fill, Side


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
    """An order as the broker sees it now."""

    client_order_id: str
    broker_order_id: str
    status: str  # accepted | partially_filled | filled | rejected | canceled | expired
    symbol: str
    side: Side
    filled_quantity: float = 0.0
    filled_avg_price: float | None = None
    updated_at: datetime | None = None
    reason: str = "market"  # market | stop | target: what kind of order it is

    @property
    def working(self) -> bool:
        return self.status in ("accepted", "partially_filled")

    def as_fill(self) -> Fill:
        """The order's fills so far, as one cumulative fill event."""
        return Fill(self.client_order_id, self.symbol, self.side, self.filled_quantity, self.filled_avg_price or 0.0,
                    self.updated_at, reason=self.reason, final=not self.working)


@dataclass(frozen=True)
class BrokerPosition:
    symbol: str
    quantity: float  # signed: negative is short
    avg_entry_price: float
    market_price: float


class EndOfData(Exception):
    """A replayed market has shown its last bar: its clock has stopped, and nothing new can be traded on it."""


class OrderRejected(Exception):
    """The broker refused the order; the message is the broker's."""


class BrokerUnavailable(Exception):
    """The broker did not answer after the bounded retries; nothing can be known or done right now."""


class MarketData(Protocol):
    """What sizing reads of the market: bars, traded price ranges and each asset's rules."""

    name: str

    def prefetch(self, symbols: list[str], count: int) -> None:
        """Load what deciding on these symbols will read (bars, asset rules) in as few requests as possible."""

    def history(self, symbol: str, count: int) -> Series:
        """The last `count` completed bars of `symbol`, oldest first."""

    def price_range(self, symbol: str, since: datetime) -> tuple[float, float] | None:
        """Lowest and highest traded price of `symbol` since `since` (None: no bars yet)."""

    def asset(self, symbol: str) -> AssetRules: ...


class AccountState(Protocol):
    """The account sizing is measured against: equity, margin, positions."""

    def account(self) -> Account:
        """May be a cached read (`Account.as_of`): the caps then count every entry filled since as in flight."""

    def account_changed(self) -> None:
        """A fill was seen: the next `account` should ask the broker again."""

    def positions(self) -> list[BrokerPosition]: ...


class Execution(Protocol):
    """Orders: sent, found again, and how positions closed."""

    def submit(self, order: OrderRequest) -> OrderAck:
        """Idempotent on client_order_id: a second submit returns the first order."""

    def find_order(self, client_order_id: str) -> OrderAck | None: ...

    def open_orders(self) -> list[OrderAck]: ...

    def closing_fill(self, symbol: str, side: Side, since: datetime) -> Fill | None:
        """The latest completed `side` order in `symbol` after `since`: how a position closed while
        nobody was listening (by hand, or by a bracket leg). None if there is none or it is unknowable."""


class Clock(Protocol):
    """The market's time: a simulated clock moved bar by bar, or a real broker's, polled."""

    def now(self) -> datetime: ...

    def advance(self) -> list[Fill]:
        """Move a simulated clock one bar and return its fills (EndOfData after its last bar); a real broker's
        clock moves by itself (its fills arrive as events) and this returns nothing."""

    def health(self) -> str:
        """One cheap, unretried probe of the broker, in words; raises while it is unreachable."""


@runtime_checkable
class SimulatedClock(Clock, Protocol):
    """A clock over recorded bars (the simulator's): it can be paused, stepped and sped up, and its data end."""

    bars_left: int
    ends_at: datetime
    calendar: np.ndarray  # every bar's time (datetime64[s]), those still to come included
    index: int  # the bar of `calendar` the clock shows

    def bars_until(self, ts: np.datetime64) -> int:
        """How many bars the clock must advance to show the last bar at or before `ts`."""


class SizingInputs(MarketData, AccountState, Protocol):
    """What the risk manager and the sizing policies may read: the market and the account, never orders."""


class Broker(MarketData, AccountState, Execution, Clock, Protocol):
    """The four ports one adapter (the simulator, Alpaca) implements."""


class SimulatedMarket(Broker, SimulatedClock, Protocol):
    """What replay and backtest drive: a broker over the recorded bars of `symbols`."""

    symbols: tuple[str, ...]


class BarHistory(Protocol):
    """Completed bars of the past from a data provider, for a local cache (`sizer data fetch`)."""

    def bars(self, symbol: str, timeframe: str, start: datetime) -> Series:
        """`symbol`'s completed bars of `timeframe` (1Day, 1Hour, 15Min or 1Min) from `start` to now."""
