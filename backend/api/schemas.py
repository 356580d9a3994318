"""All validation at the edge: anything that reaches the services is well-formed."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, create_model, model_validator,
)
from pydantic_core import PydanticCustomError

from backend.domain.model import Decision, OutcomeReport, Side, Signal

# from a satoshi to a billion: a product or ratio of two prices and a quantity stays a finite, non-zero float
Price = Annotated[float, Field(ge=1e-8, allow_inf_nan=False, le=1e9)]
Symbol = Annotated[str, StringConstraints(to_upper=True, min_length=1, max_length=32,
                                          pattern=r"^[A-Za-z0-9][A-Za-z0-9./-]*$")]
# a signal's or a decision's id: what the store keys them by; nothing else can name one
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")]


def _utc(t: datetime) -> datetime:
    """Times without a zone are UTC."""
    try:
        return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
    except OverflowError:  # year 1 or 9999 with an offset
        raise PydanticCustomError("datetime_range", "the time in UTC is outside years 1 to 9999") from None


UtcTime = Annotated[datetime, AfterValidator(_utc)]
SideIn = Annotated[Literal["buy", "sell"], BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class DecisionIn(_In):
    """Size a hypothetical trade; nothing is placed or stored."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"symbol": "SP500", "side": "buy", "confidence": 0.8}]})

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
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"signal_id": "my-1", "symbol": "SP500", "side": "buy", "confidence": 0.8, "time_limit_hours": 48}]})

    signal_id: Id = Field(description="Unique per signal: a replay with the same id places nothing new")

    def to_signal(self, signal_id: str = "") -> Signal:
        return super().to_signal(self.signal_id)


# What the API says of a decision's fields beyond their names; the fields themselves are the domain Decision's
DECISION_FIELD_DOCS = {
    "decision_id": "POST /v1/decisions: report the trade's outcome under this id (none when the trade cannot be "
                   "taken)",
    "approved": "An order of `quantity` is (to be) placed",
    "skipped": "Sized 0: no order; the signal is followed so every size learns",
    "exposure": "Notional / equity",
    "leverage": "Notional / equity, at least 1",
    "capped_by": "The caps that made the size smaller than the policy's",
    "reasoning": "The decision in words: the policy's reason, and the caps that bound the size",
    "arm": "AB_ENABLED: the arm that sized it, rl or control (GET /v1/ab)",
}
DECISION_TYPES = get_type_hints(Decision)
DECISION_NOT_SHOWN = {"equity"}  # the account's equity is the account's business, not the answer's


def _decision_field(f: dataclasses.Field) -> tuple[Any, Any]:
    """(type, pydantic Field) of a Decision field, with its default and the API's description."""
    default = {} if f.default is dataclasses.MISSING else {"default": f.default}
    if f.default_factory is not dataclasses.MISSING:
        default = {"default_factory": f.default_factory}
    return DECISION_TYPES[f.name], Field(description=DECISION_FIELD_DOCS.get(f.name), **default)


DecisionOut = create_model(
    "DecisionOut", __doc__="A decision as the API answers it: the domain Decision's fields (Decision.to_json).",
    **{f.name: _decision_field(f) for f in dataclasses.fields(Decision) if f.name not in DECISION_NOT_SHOWN},
)


class OutcomeIn(_In):
    """How a trade sized by POST /v1/decisions went, placed by the bot elsewhere. Times without a zone are UTC."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"entry_price": 1400.0, "exit_price": 1430.0, "quantity": 10, "opened_at": "2008-01-02T14:30:00Z",
         "closed_at": "2008-01-09T21:00:00Z", "worst_price": 1380.0, "commission": 2.5}]})

    entry_price: Price
    exit_price: Price
    quantity: float = Field(ge=1e-12, allow_inf_nan=False, le=1e12, description="What was traded (units)")
    opened_at: UtcTime
    closed_at: UtcTime
    worst_price: Price = Field(description="The most adverse price while it was open (at or beyond the entry and "
                                           "the exit)")
    commission: float = Field(0.0, ge=0, allow_inf_nan=False, le=1e12, description="Both fills, account currency")

    @model_validator(mode="after")
    def _in_order(self) -> "OutcomeIn":
        if self.closed_at < self.opened_at:
            raise PydanticCustomError("closed_before_opened", "closed_at must not come before opened_at")
        return self

    def to_report(self) -> OutcomeReport:
        return OutcomeReport(self.entry_price, self.exit_price, self.quantity, self.opened_at, self.closed_at,
                             self.worst_price, self.commission)


class OutcomeOut(BaseModel):
    decision_id: str
    learned: bool = Field(description="True: learned now; false: this same report was learned before")
    exposure: float
    trade_return: float = Field(description="The path's return per unit of exposure, after costs")
    reward: float
    trade_id: int


class SignalOut(BaseModel):
    signal_id: str
    status: Literal["placed", "skipped", "rejected", "exit", "canceled"] = Field(
        description="canceled: a replay of a signal whose trade was canceled before its order was placed")
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


class Problem(BaseModel):
    """Every error but 422 (whose detail lists the fields at fault)."""

    detail: str


def problem(description: str) -> dict:
    """An error response for `responses=`."""
    return {"model": Problem, "description": description}


TOO_LARGE = problem("The body is larger than MAX_BODY_BYTES")
MARKET_ENDED = problem("The simulated market has no more bars: nothing new can be traded")
UNAVAILABLE = problem("A dependency (the database, the broker) is unreachable or busy; nothing changed: send it again "
                      "after Retry-After seconds")


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    checks: dict[str, str] = Field(description="Per dependency: ok, or down with the reason")
    trading_state: dict[str, str] = Field(description="state, cause and reason, as GET /v1/trading-state")
    dead_letters: dict[str, int] | None = Field(None, description="With workers: each topic's dead letters (null "
                                                                  "while Redis cannot say)")


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
    decisions: dict[str, int] = Field(description="POST /v1/decisions decisions: awaiting_report, reported, expired")
    total_updates: int
    last_updated: datetime | None
    states: int
    actions: int
    visited_cells: int
    visited_states: int
    trading_state: str = Field(description="ACTIVE, REDUCING or HALTED: see GET /v1/trading-state")
    serving: dict[str, Any] = Field(description="The policy that sizes now (SIZING_POLICY), in its own terms: for a "
                                                "PPO checkpoint its version, actions, whether it is long-only")


class TradingStateIn(_In):
    model_config = ConfigDict(json_schema_extra={"examples": [{"state": "REDUCING", "reason": "broker maintenance"}]})

    state: Literal["ACTIVE", "REDUCING", "HALTED"]
    reason: str = Field(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f]+$", description="Why, for the log")


class TradingStateChange(BaseModel):
    id: int
    at: datetime = Field(description="On the market's clock")
    from_state: str
    to_state: str
    cause: str = Field(description="A protection's name or `operator`")
    reason: str
    logged_at: datetime


class TradingStateOut(BaseModel):
    state: Literal["ACTIVE", "REDUCING", "HALTED"]
    cause: str = Field(description="What holds it there: a protection's name, `operator`, or empty")
    reason: str
    changed_at: datetime | None
    protections: list[str] = Field(description="The protections turned on (RM_MAX_DAILY_LOSS_PCT, ...)")
    changes: list[TradingStateChange] = Field(description="The latest changes, newest first")


class ArmOut(BaseModel):
    signals: int = Field(description="Closed signals the arm sized, those sized 0 included (their log growth: 0)")
    trades: int = Field(description="Of them, placed with an order")
    win_rate: float | None = Field(description="Of the placed trades")
    avg_r_multiple: float | None = Field(description="PnL / what the stop would have lost as placed, averaged")
    mean_log_growth: float | None = Field(description="ln(equity after / before) per signal: the primary metric")
    max_drawdown: float | None = Field(description="Of the arm's own track (its trades compounded in close order)")
    sharpe: float | None = Field(description="Per trade: mean / standard deviation of the returns on equity")
    recovery_days: float | None = Field(description="The longest time the arm's track spent below a peak")
    total_pnl: float


class DifferenceOut(BaseModel):
    n: int = Field(description="Signals in both arms together")
    mean: float = Field(description="RL - control")
    t: float | None = Field(description="Welch's t (none without spread)")
    df: float
    p_value: float = Field(description="Two-sided")
    ci: list[float] = Field(description="Welch's interval at 1 - AB_ALPHA")
    bootstrap_ci: list[float] = Field(description="Percentile bootstrap interval at 1 - AB_ALPHA (seeded)")


class ABOut(BaseModel):
    enabled: bool = Field(description="AB_ENABLED: new signals are assigned to arms")
    rl_policy: str
    control: str
    rl_share: float
    unit: str
    alpha: float
    power: float
    arms: dict[str, ArmOut] = Field(description="rl and control")
    log_growth_difference: DifferenceOut | None = Field(description="In mean log growth per signal; none until each "
                                                                    "arm has two")
    verdict: Literal["RL ahead, significant", "not yet significant", "control ahead, significant"]
    trades_still_needed: int | None = Field(description="More signals (both arms) for AB_POWER at the difference "
                                                        "observed so far; none while there is none")
    r_multiple_difference: DifferenceOut | None = Field(description="The predecessors' test: Welch's t on the "
                                                                    "placed trades' R-multiples")


class ClockOut(BaseModel):
    source: Literal["simulator", "broker"] = Field(description="simulator: bars replayed by this service, which "
                                                               "POST /v1/clock drives; broker: the real market's")
    broker: str
    now: datetime = Field(description="The market's time: the latest bar shown, or the broker's clock")
    paused: bool = Field(description="No tick until resumed (POST /v1/clock steps all the same)")
    speed: float = Field(description="Ticks this much faster than SIM_BAR_SECONDS")
    bar_seconds: float = Field(description="Wall-clock seconds between two ticks now: a simulated bar "
                                           "(SIM_BAR_SECONDS / speed), or a poll of the real broker's open trades "
                                           "(ALPACA_POLL_SECONDS)")
    bars_left: int | None = Field(description="Simulator: bars still to come (null with a real broker)")
    ends_at: datetime | None = Field(description="Simulator: the last bar's time (null with a real broker)")


class ClockIn(_In):
    """Applied in this order: the speed, pausing or resuming, then the steps."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"paused": True, "step": 5}, {"paused": False, "speed": 10}]})

    paused: bool | None = Field(None, description="true pauses the clock, false resumes it")
    speed: float | None = Field(None, ge=0.01, le=100, allow_inf_nan=False,
                                description="Ticks per SIM_BAR_SECONDS: 10 shows a bar ten times as often")
    step: int | None = Field(None, ge=1, le=50, description="Show this many bars now (about ten weeks of daily "
                                                            "bars at most), paused or not")

    @model_validator(mode="after")
    def _something(self) -> "ClockIn":
        if self.paused is None and self.speed is None and self.step is None:
            raise PydanticCustomError("nothing_to_do", "give paused, speed or step")
        return self


class EquitySample(BaseModel):
    at: datetime = Field(description="The market's time")
    equity: float
    cash: float
    gross_position_value: float
    exposure: float | None = Field(description="Gross position value / equity (null while equity is not positive)")


class EquityOut(BaseModel):
    """The account, sampled at each tick of the clock since the service started (the latest 2,000 samples)."""

    samples: list[EquitySample] = Field(description="Oldest first")
