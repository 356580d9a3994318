"""All validation at the edge: anything that reaches the services is well-formed."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from backend.domain.model import Side, Signal

Price = Annotated[float, Field(gt=0, allow_inf_nan=False, le=1e9)]
Symbol = Annotated[str, BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v),
                   Field(min_length=1, max_length=32, pattern=r"^[A-Z0-9][A-Z0-9./-]*$")]
SideIn = Annotated[Literal["buy", "sell"], BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class DecisionIn(_In):
    """Size a hypothetical trade; nothing is placed or stored."""

    symbol: Symbol
    side: SideIn
    confidence: float = Field(ge=0, le=1, allow_inf_nan=False, description="Signal confidence in [0, 1]")
    price: Price | None = Field(None, description="Reference price; the broker's last price when absent")
    stop_price: Price | None = Field(None, description="Protective stop; ATR-based when absent")
    target_price: Price | None = Field(None, description="Take-profit level")
    time_limit_hours: float | None = Field(None, gt=0, le=24 * 366, allow_inf_nan=False)

    def to_signal(self, signal_id: str = "") -> Signal:
        return Signal(
            signal_id=signal_id,
            symbol=self.symbol,
            side=Side(self.side),
            confidence=self.confidence,
            price=self.price,
            stop_price=self.stop_price,
            target_price=self.target_price,
            time_limit_hours=self.time_limit_hours,
        )


class SignalIn(DecisionIn):
    signal_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$",
                           description="Unique per signal: a replay with the same id places nothing new")

    def to_signal(self, signal_id: str = "") -> Signal:
        return super().to_signal(self.signal_id)


class DecisionOut(BaseModel):
    approved: bool = Field(description="An order of `quantity` is (to be) placed")
    skipped: bool = Field(False, description="Sized 0: no order; the signal is followed so every size learns")
    symbol: str
    side: str
    exposure: float = Field(0.0, description="Notional / equity")
    size_usd: float
    quantity: float
    leverage: float = Field(description="Notional / equity, at least 1")
    price: float
    stop_price: float
    target_price: float | None
    policy: str
    state_key: str | None
    action_key: str | None
    q_value: float | None
    model_version: str | None
    capped_by: list[str]
    reasoning: str


class SignalOut(BaseModel):
    signal_id: str
    status: Literal["placed", "skipped", "rejected", "exit"]
    reason: str
    replayed: bool
    trade_id: int | None
    closed_trade_id: int | None
    decision: DecisionOut | None


class SignalQueued(BaseModel):
    signal_id: str
    status: Literal["queued"] = "queued"


class SignalState(BaseModel):
    """A handled signal as stored: status placed | skipped | rejected | exit; trade_status follows its trade."""

    signal_id: str
    symbol: str
    side: str
    confidence: float
    status: str
    reason: str
    decision: DecisionOut
    received_at: datetime
    trade_id: int | None
    trade_status: str | None


class Page(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[dict[str, Any]]


class AgentOut(BaseModel):
    policy: str
    reward_fn: str
    confidence_z: float
    prior_trades: float
    horizon_trades: float | None
    menu: list[float] = Field(description="The exposures (notional / equity) the Q agent chooses from")
    epsilon: float
    epsilon_initial: float
    epsilon_min: float
    epsilon_decay: float
    recent_win_rate: float | None
    win_rate_window: int
    total_updates: int
    last_updated: datetime | None
    states: int
    actions: int
    visited_cells: int
    visited_states: int
