"""A trade: its life (statuses and the moves allowed between them, in one place) and the math of its path."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from backend.domain.model import Side, TradePath


DECISION_ID_PREFIX = "dec-"  # the signal id of a POST /v1/decisions decision (a trade placed elsewhere)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class TradeStatus(StrEnum):
    """A trade's life. PENDING: recorded before its entry order is sent (a crash then re-sends it under the same
    client order id). OPEN: the entry filled, wholly or in part. CLOSING: its exit order sent (back to OPEN if
    that order ends unfilled). CLOSED: exited, with its outcome and reward. REJECTED (the broker refused the
    entry) and CANCELED (the broker knows nothing of it) end it with nothing placed and no reward. EXTERNAL: a
    decision sized for a bot that trades elsewhere, CLOSED when the bot reports its outcome."""

    PENDING = "pending"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"
    REJECTED = "rejected"
    CANCELED = "canceled"
    EXTERNAL = "external"


ACTIVE_TRADE_STATUSES = (TradeStatus.PENDING, TradeStatus.OPEN, TradeStatus.CLOSING)  # one per symbol at most
UNPLACED_TRADE_STATUSES = (TradeStatus.REJECTED, TradeStatus.CANCELED)  # ended with nothing placed

# every move a trade may make; anything else (a late or replayed event) changes nothing. OPEN -> OPEN: a larger
# cumulative fill of its entry order.
TRANSITIONS: dict[TradeStatus, frozenset[TradeStatus]] = {
    TradeStatus.PENDING: frozenset({TradeStatus.OPEN, TradeStatus.REJECTED, TradeStatus.CANCELED}),
    TradeStatus.OPEN: frozenset({TradeStatus.OPEN, TradeStatus.CLOSING, TradeStatus.CLOSED, TradeStatus.CANCELED}),
    TradeStatus.CLOSING: frozenset({TradeStatus.OPEN, TradeStatus.CLOSED, TradeStatus.CANCELED}),
    TradeStatus.EXTERNAL: frozenset({TradeStatus.CLOSED}),
    TradeStatus.CLOSED: frozenset(),
    TradeStatus.REJECTED: frozenset(),
    TradeStatus.CANCELED: frozenset(),
}


def moves_to(target: TradeStatus) -> tuple[TradeStatus, ...]:
    """The statuses a trade may reach `target` from."""
    return tuple(status for status, targets in TRANSITIONS.items() if target in targets)


@dataclass(frozen=True)
class SignalRecord:
    """A signal as first handled: the idempotency record a replay of its id is answered from."""

    signal_id: str
    symbol: str
    side: Side
    confidence: float
    decision: dict[str, Any]  # Decision.to_json()
    status: str  # placed | skipped | rejected | exit | decided
    reason: str
    received_at: datetime


@dataclass(frozen=True)
class Trade:
    """A position sizer opened (or followed: a `shadow` is a signal sized 0, no order, quantity 0, followed on the
    market's prices so that its path teaches every size), with the decision's RL keys on the trade itself."""

    id: int
    signal_id: str
    client_order_id: str
    symbol: str
    side: Side
    status: TradeStatus
    shadow: bool
    quantity: float
    size_usd: float
    leverage: float
    stop_price: float
    target_price: float | None
    deadline_at: datetime | None
    policy: str
    rl_state_key: str | None
    rl_action_key: str | None
    q_value: float | None
    model_version: str | None
    arm: str | None  # the A/B test's arm that sized it
    equity_at_entry: float
    decided_at: datetime | None  # on the market's clock
    decision_price: float | None  # the price it was sized at
    entry_price: float | None
    opened_at: datetime | None
    exit_price: float | None
    exit_reason: str | None
    closed_at: datetime | None
    commission_usd: float
    pnl_usd: float | None
    max_adverse_pct: float
    worst_price: float | None  # the most adverse price while open
    reason: str
    created_at: datetime

    def __post_init__(self) -> None:  # rows hand these back as strings
        object.__setattr__(self, "side", Side(self.side))
        object.__setattr__(self, "status", TradeStatus(self.status))

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_TRADE_STATUSES

    @property
    def exposure(self) -> float:
        """What it holds as a share of the equity it was sized against (notional at its entry price / equity)."""
        return self.quantity * self.entry_price / self.equity_at_entry

    def cost_rate(self, exit_commission: float) -> float:
        """Both fills' commissions as a share of its entry notional."""
        return (self.commission_usd + exit_commission) / (self.quantity * self.entry_price)

    def adverse_excursion_pct(self, worst_price: float) -> float:
        """Loss at `worst_price` as a percent of the margin the trade committed (0 when it is a gain). The margin
        is notional / leverage, so per unit of price move this is leverage x the adverse return."""
        return max(0.0, 100.0 * self.leverage * self.side.sign * (self.entry_price - worst_price) / self.entry_price)

    def more_adverse(self, a: float, b: float | None) -> float:
        """The worse of two prices for this trade (`b` None: `a`)."""
        return a if b is None else (min(a, b) if self.side is Side.BUY else max(a, b))

    def path(self, exit_price: float, closed_at: datetime, cost_rate: float, worst: float | None = None) -> TradePath:
        """Its path to an exit at `exit_price`; `worst`: an adverse price seen since its worst was last stored."""
        worst_price = self.more_adverse(exit_price, self.worst_price)
        return TradePath(
            side=self.side,
            entry_price=self.entry_price,
            exit_price=exit_price,
            worst_price=worst_price if worst is None else self.more_adverse(worst, worst_price),
            cost_rate=cost_rate,
            duration_hours=(closed_at - self.opened_at).total_seconds() / 3600.0,
        )
