"""The schema. Alembic migrations (migrations/) create exactly these tables on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from backend.domain.trade import DECISION_ID_PREFIX, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """Stored as naive UTC (SQLite has no time zones), always handed back as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=timezone.utc) if value is not None else None


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class SignalRow(Base):
    """One row per signal id ever received: the idempotency record of the executor."""

    __tablename__ = "signal"

    signal_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(4))
    confidence: Mapped[float] = mapped_column(Float)
    decision: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # placed | skipped | rejected | exit
    reason: Mapped[str] = mapped_column(Text, default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TradeRow(Base):
    """A position sizer opened, with the decision's RL keys stored on the trade itself. A `shadow` trade is a
    signal sized 0: no order, quantity 0, followed on the market's prices exactly like a trade (stop, target,
    time limit, opposite signal) so that its path teaches every exposure what it would have earned."""

    __tablename__ = "trade"
    __table_args__ = (
        # at most one active trade per symbol: the database, not hope, stops a double open
        Index(
            "uq_trade_active_symbol",
            "symbol",
            unique=True,
            sqlite_where=text("status IN ('pending', 'open', 'closing')"),  # ACTIVE_TRADE_STATUSES
            postgresql_where=text("status IN ('pending', 'open', 'closing')"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    signal_id: Mapped[str] = mapped_column(ForeignKey("signal.signal_id"), unique=True)
    client_order_id: Mapped[str] = mapped_column(String(128), unique=True)
    symbol: Mapped[str] = mapped_column(String(32), index=True)
    side: Mapped[str] = mapped_column(String(4))
    status: Mapped[str] = mapped_column(String(16), index=True)  # a TradeStatus
    shadow: Mapped[bool] = mapped_column(Boolean, default=False)
    quantity: Mapped[float] = mapped_column(Float)
    size_usd: Mapped[float] = mapped_column(Float)
    leverage: Mapped[float] = mapped_column(Float)
    stop_price: Mapped[float] = mapped_column(Float)
    target_price: Mapped[float | None] = mapped_column(Float, nullable=True)
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    policy: Mapped[str] = mapped_column(String(16))
    rl_state_key: Mapped[str | None] = mapped_column(String(80), nullable=True)
    rl_action_key: Mapped[str | None] = mapped_column(String(16), nullable=True)
    q_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    arm: Mapped[str | None] = mapped_column(String(16), nullable=True)  # the A/B test's arm that sized it (AB_*)
    equity_at_entry: Mapped[float] = mapped_column(Float)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # on the market's clock
    decision_price: Mapped[float | None] = mapped_column(Float, nullable=True)  # the price it was sized at
    entry_price: Mapped[float | None] = mapped_column(Float, nullable=True)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    exit_price: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    commission_usd: Mapped[float] = mapped_column(Float, default=0.0)
    pnl_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_adverse_pct: Mapped[float] = mapped_column(Float, default=0.0)
    worst_price: Mapped[float | None] = mapped_column(Float, nullable=True)  # the most adverse price while open
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OutcomeRow(Base):
    """A closed trade's result and the reward it gave: unique per trade, so a reward is applied once."""

    __tablename__ = "outcome"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trade_id: Mapped[int] = mapped_column(ForeignKey("trade.id"), unique=True)
    symbol: Mapped[str] = mapped_column(String(32))
    policy: Mapped[str] = mapped_column(String(16))
    state_key: Mapped[str | None] = mapped_column(String(80), nullable=True, index=True)
    action_key: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reward_fn: Mapped[str] = mapped_column(String(16))
    reward: Mapped[float] = mapped_column(Float)
    exposure: Mapped[float | None] = mapped_column(Float, nullable=True)  # notional / equity at entry; 0: shadow
    trade_return: Mapped[float | None] = mapped_column(Float, nullable=True)  # per unit of exposure, after costs
    pnl_usd: Mapped[float] = mapped_column(Float)
    pnl_pct: Mapped[float] = mapped_column(Float)
    duration_hours: Mapped[float] = mapped_column(Float)
    max_drawdown_pct: Mapped[float] = mapped_column(Float)
    won: Mapped[bool] = mapped_column(Boolean)
    closed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class QValueRow(Base):
    """What one exposure (action) earned in one state or pooled level (`*|high|*|*`): decayed sums of its
    rewards. Q, the average, is reward_sum / weight."""

    __tablename__ = "q_value"

    state_key: Mapped[str] = mapped_column(String(80), primary_key=True)
    action_key: Mapped[str] = mapped_column(String(16), primary_key=True)
    visits: Mapped[int] = mapped_column(Integer, default=0)
    weight: Mapped[float] = mapped_column(Float, default=0.0)
    reward_sum: Mapped[float] = mapped_column(Float, default=0.0)
    reward_sq_sum: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def q(self) -> float:
        return self.reward_sum / self.weight if self.weight > 0 else 0.0


class AgentRow(Base):
    """The learning agent's own state; one row per agent name."""

    __tablename__ = "agent"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    epsilon_initial: Mapped[float] = mapped_column(Float)
    epsilon: Mapped[float] = mapped_column(Float)
    total_updates: Mapped[int] = mapped_column(Integer, default=0)
    last_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TradingStateRow(Base):
    """The trading state (one row) and what its protections keep between evaluations."""

    __tablename__ = "trading_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    state: Mapped[str] = mapped_column(String(16))  # ACTIVE | REDUCING | HALTED
    cause: Mapped[str] = mapped_column(String(32), default="")  # a protection's name, "operator", or ""
    reason: Mapped[str] = mapped_column(Text, default="")
    changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # on the market's clock
    manual_state: Mapped[str | None] = mapped_column(String(16), nullable=True)  # the operator's hold
    manual_reason: Mapped[str] = mapped_column(Text, default="")
    day: Mapped[str | None] = mapped_column(String(10), nullable=True)  # UTC date of day_start_equity
    day_start_equity: Mapped[float | None] = mapped_column(Float, nullable=True)
    peak_equity: Mapped[float | None] = mapped_column(Float, nullable=True)
    reset_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # the operator's last ACTIVE


class TradingStateChangeRow(Base):
    """Every change of the trading state, with its cause."""

    __tablename__ = "trading_state_change"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)  # on the market's clock
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    cause: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    logged_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SimAccountRow(Base):
    """The simulated broker's account (one row): the embedded default resumes it after a restart."""

    __tablename__ = "sim_account"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    fingerprint: Mapped[str] = mapped_column(Text)  # the bars and the account it was started with
    bar_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the bar its clock shows
    cash: Mapped[float] = mapped_column(Float)
    positions: Mapped[dict] = mapped_column(JSON)
    saved_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SimOrderRow(Base):
    """One order of the simulated broker: its latest state, and the request while it waits for the next bar."""

    __tablename__ = "sim_order"

    client_order_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)  # arrival order: pending orders fill in it
    ack: Mapped[dict] = mapped_column(JSON)
    pending: Mapped[dict | None] = mapped_column(JSON, nullable=True)


# trades this account placed: not followed without an order, not sized for a bot that trades elsewhere
OWN_TRADE = (~TradeRow.shadow, ~TradeRow.signal_id.startswith(DECISION_ID_PREFIX))
