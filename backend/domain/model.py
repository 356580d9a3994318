"""Pure value types shared by every layer. No I/O here."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum


class Side(str, Enum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> "Side":
        return Side.SELL if self is Side.BUY else Side.BUY


@dataclass(frozen=True)
class Bar:
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0


@dataclass(frozen=True)
class Signal:
    signal_id: str
    symbol: str
    side: Side
    confidence: float
    price: float | None = None  # the sender's reference price; the broker's mark is used when absent
    stop_price: float | None = None
    target_price: float | None = None
    time_limit_hours: float | None = None

    def to_event(self) -> dict:
        return {**self.__dict__, "side": self.side.value}

    @classmethod
    def from_event(cls, event: dict) -> "Signal":
        return cls(**{**event, "side": Side(event["side"])})


@dataclass(frozen=True)
class Account:
    equity: float
    cash: float
    buying_power: float
    multiplier: float  # the most leverage the account allows
    shorting_enabled: bool
    gross_position_value: float  # sum of |qty x mark| over open positions
    non_marginable_buying_power: float | None = None  # what unleveraged assets may use (None: cash)

    @property
    def exposure(self) -> float:
        """Gross position value as a fraction of equity (the real portfolio, not a placeholder)."""
        return self.gross_position_value / self.equity if self.equity > 0 else math.inf


@dataclass(frozen=True)
class MarketContext:
    """What the sizing policies know of the market for one symbol at decision time."""

    price: float
    atr: float  # Wilder ATR in price units
    adx: float  # Wilder ADX, 0..100

    @property
    def atr_pct(self) -> float:
        return self.atr / self.price


@dataclass(frozen=True)
class Proposal:
    """A policy's raw answer, before the risk manager's caps."""

    size_usd: float  # notional exposure
    leverage: float
    policy: str
    why: str
    state_key: str | None = None
    action_key: str | None = None
    q_value: float | None = None
    model_version: str | None = None


@dataclass(frozen=True)
class Decision:
    """The risk manager's final answer. `approved` False means: place nothing."""

    approved: bool
    symbol: str
    side: Side
    size_usd: float
    quantity: float
    leverage: float
    price: float
    stop_price: float
    target_price: float | None
    policy: str
    reasoning: str
    state_key: str | None = None
    action_key: str | None = None
    q_value: float | None = None
    model_version: str | None = None
    capped_by: tuple[str, ...] = field(default_factory=tuple)
    equity: float | None = None  # the account equity it was sized against


class BrokerEvent:
    """JSON-able form of the broker events below, so any bus can carry them."""

    side: Side
    ts: datetime

    def to_event(self) -> dict:
        return {**self.__dict__, "side": self.side.value, "ts": self.ts.isoformat()}

    @classmethod
    def from_event(cls, event: dict):
        return cls(**{**event, "side": Side(event["side"]), "ts": datetime.fromisoformat(event["ts"])})


@dataclass(frozen=True)
class Fill(BrokerEvent):
    """A broker event: an order executed, wholly or in part.

    `quantity` and `price` are the order's cumulative filled quantity and average price so far, not one
    execution's: applying the same event twice, or an older one after a newer one, changes nothing.
    `final` is False while more of the order may still fill (a partial fill)."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    price: float
    ts: datetime
    commission: float = 0.0
    reason: str = "market"  # market | stop | target
    final: bool = True


@dataclass(frozen=True)
class OrderEnded(BrokerEvent):
    """A broker event: an order stopped working without filling completely (canceled, rejected, expired).
    `filled_quantity` is what filled before it ended (already reported by its fills)."""

    client_order_id: str
    symbol: str
    side: Side
    status: str  # canceled | rejected | expired
    filled_quantity: float
    message: str
    ts: datetime


@dataclass(frozen=True)
class AssetRules:
    """What the broker allows for one symbol, read at decision time."""

    tradable: bool = True
    fractionable: bool = True  # False: quantities are whole units
    shortable: bool = True
    marginable: bool = True  # False (e.g. crypto): no leverage, paid from non-marginable buying power
    market_open: bool = True
    broker_stops: bool = True  # the stop and target travel with the order; False: the monitor enforces them


@dataclass(frozen=True)
class Outcome:
    """What a closed trade taught us."""

    pnl_usd: float
    pnl_pct: float  # on the margin the trade committed, in percent
    duration_hours: float
    max_drawdown_pct: float  # worst adverse excursion on that margin, percent, >= 0
    equity_at_entry: float

    @property
    def won(self) -> bool:
        return self.pnl_usd > 0
