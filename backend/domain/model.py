"""Pure value types shared by every layer. No I/O here."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import Enum
from typing import Any


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
    as_of: datetime | None = None  # a cached read: fills after this time may be missing from it (None: live)

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
    """A policy's raw answer, before the risk manager's caps: an exposure (notional / equity; 0 skips)."""

    exposure: float
    policy: str
    why: str
    action_key: str | None = None
    q_value: float | None = None  # the Q agent's estimate of the action's expected reward
    model_version: str | None = None


@dataclass(frozen=True)
class Decision:
    """The risk manager's final answer. `approved`: place an order of `quantity`. `skipped`: the trade could be
    taken but is sized 0 (the policy's skip, or the caps leave less than the minimum order); it is followed
    without an order, so that every size learns from it. Neither: rejected (market closed, not shortable...)."""

    approved: bool
    symbol: str
    side: Side
    size_usd: float
    quantity: float
    leverage: float  # notional / equity, at least 1: what the position borrows
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
    exposure: float = 0.0  # size_usd / equity
    skipped: bool = False
    decision_id: str | None = None  # POST /v1/decisions: the id its outcome is reported under
    arm: str | None = None  # the live A/B test's arm (rl | control) that sized it; None without a test

    def __post_init__(self) -> None:
        numbers = {"size_usd": self.size_usd, "quantity": self.quantity, "leverage": self.leverage,
                   "price": self.price, "stop_price": self.stop_price, "target_price": self.target_price,
                   "q_value": self.q_value, "equity": self.equity, "exposure": self.exposure}
        bad = [name for name, v in numbers.items() if v is not None and not math.isfinite(v)]
        if bad or self.size_usd < 0 or self.quantity < 0:
            raise ValueError(f"a decision must hold finite, non-negative sizes: {numbers}")

    def to_json(self) -> dict[str, Any]:
        """The one JSON form of a decision: stored with its signal, answered by the API (DecisionOut)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**d, "side": self.side.value, "capped_by": list(self.capped_by)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Decision:
        return cls(**{**d, "side": Side(d["side"]), "capped_by": tuple(d["capped_by"])})


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
class OutcomeReport:
    """How a trade sized by POST /v1/decisions went, as the bot that placed it elsewhere tells it."""

    entry_price: float
    exit_price: float
    quantity: float
    opened_at: datetime
    closed_at: datetime
    worst_price: float  # the most adverse price while it was open
    commission: float = 0.0  # both fills, in the account's currency


@dataclass(frozen=True)
class Outcome:
    """What a closed trade earned, or what a trade of `exposure` on the same path would have earned."""

    exposure: float  # notional / equity at entry
    pnl_usd: float
    pnl_pct: float  # on the margin the trade committed (notional / max(1, exposure)), in percent
    duration_hours: float
    max_drawdown_pct: float  # worst adverse excursion on that margin, percent, >= 0
    equity_at_entry: float
    trade_return: float  # the path's return per unit of exposure, after costs (the same for every size)
    liquidated: bool = False

    @property
    def won(self) -> bool:
        """Whether the trade's path paid, whatever its size (a trade sized 0 wins or loses too)."""
        return self.trade_return > 0


@dataclass(frozen=True)
class TradePath:
    """A closed trade's prices: all it takes to say what any size of it would have earned. The stop and the
    exit are the same price for every size; costs scale with it; a margin call depends on it."""

    side: Side
    entry_price: float
    exit_price: float
    worst_price: float  # the most adverse price while it was open
    cost_rate: float  # round-trip costs (commissions; slippage is in the prices) / entry notional
    duration_hours: float

    def _return_at(self, price: float) -> float:
        return self.side.sign * (price / self.entry_price - 1)

    def outcome(self, exposure: float, equity: float, maintenance: float | None) -> Outcome:
        """A trade of `exposure` x `equity` on this path. With a `maintenance` margin, an exposure whose equity
        would have fallen below that share of its position at the worst price is liquidated there (the
        conservative reading: a real margin call fills at or beyond that level). A realised trade is read
        without (None): its exit already is what happened."""
        worst = min(0.0, self._return_at(self.worst_price))
        liquidated = maintenance is not None and exposure > 0 and (
            1 + exposure * worst < maintenance * exposure * self.worst_price / self.entry_price)
        path_return = self._return_at(self.exit_price)
        gross = worst if liquidated else path_return
        on_margin = 100 * max(1.0, exposure)  # percent of the margin per unit of price return
        return Outcome(
            exposure=exposure,
            pnl_usd=max(-equity, exposure * equity * (gross - self.cost_rate)),
            pnl_pct=on_margin * (gross - self.cost_rate),
            duration_hours=self.duration_hours,
            max_drawdown_pct=on_margin * max(0.0, -worst, -gross),
            equity_at_entry=equity,
            trade_return=path_return - self.cost_rate,
            liquidated=liquidated,
        )


def bracket_exit(side: Side, stop: float | None, target: float | None, bar_open: float, high: float,
                 low: float) -> tuple[float, str] | None:
    """Where a position's stop or target leaves it within a bar: at the level, or at the open when the bar
    gapped through it; a bar touching both is read as the stop first (the conservative reading)."""
    long = side is Side.BUY
    if stop is not None and (low <= stop if long else high >= stop):
        return (min(bar_open, stop) if long else max(bar_open, stop)), "stop"
    if target is not None and (high >= target if long else low <= target):
        return (max(bar_open, target) if long else min(bar_open, target)), "target"
    return None
