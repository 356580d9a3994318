"""Every setting sizer reads, typed, defaulted and documented. `.env.example` mirrors this file.

Settings come from the environment (or a `.env` file) by their upper-case names. They are grouped by the
component that reads them (`settings.risk.max_leverage`), and each component is given only its group; a field's
variable is its group's prefix and its name (RM_ + MAX_LEVERAGE) unless the field names its own (alias). Code
that overrides settings names them by their variables too, in lower case (`load_settings(rm_max_leverage=2)`,
`settings.replace(sim_symbols=...)`). A bad value stops start-up with a message naming the variable (see
`load_settings`).
"""
from __future__ import annotations

import json
import os
from copy import copy
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, create_model, model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.domain.rewards import FORMER_NAMES
from backend.domain.state import MIN_EXPOSURE, BucketEdges, exposure_menu


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _group_config(prefix: str) -> ConfigDict:
    """Each field of the group is read from the variable PREFIX + its name, unless it has an alias."""
    return ConfigDict(frozen=True, extra="forbid", alias_generator=lambda name: prefix + name)


class ServiceSettings(BaseModel):
    """The service: database, broker, API"""

    model_config = _group_config("")
    database_url: str = Field(
        "sqlite:///./data/sizer.db",
        description="SQLAlchemy URL. sqlite:///path (embedded default) or postgresql+psycopg://user@host/db",
    )
    auto_migrate: bool = Field(True, description="Run Alembic migrations to head when the service starts")
    broker: Literal["sim", "alpaca"] = Field(
        "sim", description="Where orders go: sim (the built-in market simulator) or alpaca (alpaca-py; see ALPACA_*)"
    )
    host: str = Field("127.0.0.1", description="Address the API listens on")
    port: int = Field(8000, ge=1, le=65535, description="Port the API listens on")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level")
    max_body_bytes: int = Field(64_000, ge=1_000, description="Requests with a larger body are refused (413)")
    api_key: SecretStr | None = Field(
        None,
        alias="sizer_api_key",
        min_length=16,
        description="Required in the X-API-Key header of every /v1 request, reads included (see SIZER_OPEN_READS); "
        "/healthz, /metrics and the OpenAPI docs never need it. May be empty only while HOST is a loopback address",
    )
    open_reads: bool = Field(
        False, alias="sizer_open_reads",
        description="true: the GET endpoints under /v1 (trades, positions, outcomes, the Q-table, the agent, "
        "signals, reconciliation) answer without X-API-Key; whatever trades, sizes or teaches still needs it"
    )

    @model_validator(mode="after")
    def _keyed(self) -> ServiceSettings:
        if self.api_key is None and self.host not in LOOPBACK_HOSTS:
            raise ValueError(f"SIZER_API_KEY must be set when HOST is {self.host!r} (not a loopback address): "
                             "anyone who can reach the API could trade")
        return self


class BusSettings(BaseModel):
    """The event bus between the API and the workers"""

    model_config = _group_config("bus_")
    redis_url: str | None = Field(
        None, alias="redis_url", description="Redis for the event bus shared by the API and workers, e.g. "
        "redis://redis:6379/0 (empty: the embedded in-process bus)"
    )
    redis_prefix: str = Field(
        "sizer:", alias="redis_prefix", min_length=1, description="Prefix of every Redis key sizer uses (bus "
        "streams, hot trade state), so several deployments can share one Redis"
    )
    claim_idle_ms: int = Field(
        60_000, ge=1_000, description="A Redis bus message unacknowledged this long (its consumer died) is retried"
    )
    max_deliveries: int = Field(
        5, ge=1, description="A Redis bus message delivered this often without success goes to the dead-letter stream"
    )
    stream_maxlen: int = Field(
        100_000, ge=1_000, description="Each Redis bus stream is trimmed to about this many messages"
    )
    worker_concurrency: int = Field(
        16, alias="worker_concurrency", ge=1, le=24, description="Signals one worker sizes and places at once "
        "(threads; two signals for one symbol are never handled at the same time); also the Alpaca connections "
        "each process keeps"
    )


class SizingSettings(BaseModel):
    """Sizing: the policy, the Q agent's estimates, exploration and reward"""

    model_config = _group_config("rl_sizing_")
    policy: Literal["qlearning", "ppo", "atr", "fixed", "kelly"] = Field(
        "qlearning", alias="sizing_policy", description="Which policy sizes trades: qlearning, ppo, atr (the "
        "rule), fixed (SIZING_FIXED_EXPOSURE) or kelly (SIZING_KELLY_FRACTION of the best exposure over all past "
        "trades); the ATR rule is always the fallback, and the Q-table learns from every trade whichever policy "
        "sized it"
    )
    fixed_exposure: float = Field(
        0.5, alias="sizing_fixed_exposure", gt=0,
        description="SIZING_POLICY=fixed: every signal gets this exposure (notional / equity)"
    )
    kelly_fraction: float = Field(
        0.5, alias="sizing_kelly_fraction", gt=0, le=1,
        description="SIZING_POLICY=kelly: the share of the estimated Kelly exposure (0.5: half Kelly)"
    )
    model_path: Path = Field(
        Path(__file__).resolve().parents[1] / "models" / "ppo-sizer" / "model.pt", alias="model_path",
        description="PPO checkpoint served when SIZING_POLICY=ppo (default: the model shipped in models/)",
    )
    rl_enabled: bool = Field(True, alias="rl_position_sizing_enabled",
                             description="False: every trade is sized by the ATR rule")
    confidence_z: float = Field(
        1.28, ge=0, description="Only exposures whose expected reward less this many standard errors is above 0 may "
        "be taken (the best expected among them is): an edge that is not yet this clear gets no size (0: any "
        "positive estimate)"
    )
    prior_trades: float = Field(
        50.0, ge=0, description="Before any trade the agent believes in no edge, as firmly as if this many trades had "
        "earned nothing; the evidence of real trades outweighs it as they accumulate"
    )
    horizon_trades: float | None = Field(
        None, gt=1, description="Forgetting horizon: each state's older rewards fade with weight (1 - 1/N) per newer "
        "one, for markets that change (empty: remember everything equally)"
    )
    epsilon: float = Field(
        0.0, ge=0, le=1, description="Initial exploration rate (a random exposure that fits the caps). Every trade "
        "teaches every exposure, so none is needed"
    )
    epsilon_min: float = Field(0.0, ge=0, le=1, description="Exploration never decays below this")
    epsilon_decay: float = Field(
        1.0, gt=0, le=1, description="Epsilon is multiplied by this after every learned trade (1.0: no decay)"
    )
    reward: Annotated[Literal["shaped_pnl", "log_growth"],
                      BeforeValidator(lambda name: FORMER_NAMES.get(name, name))] = Field(
        "log_growth", description="Reward: log_growth (Kelly's objective) or shaped_pnl (the predecessors' pnl% on "
        "margin less time and drawdown penalties; its former name seed is read as shaped_pnl)"
    )
    seed: int | None = Field(None, description="Seed of the exploration RNG (None: from the OS)")
    decision_report_hours: float = Field(
        720.0, alias="decision_report_hours", gt=0, description="How long the outcome of a POST /v1/decisions "
        "decision may be reported (hours) before the decision expires unlearned"
    )
    shadow_cost_bps: float = Field(
        6.0, alias="rl_shadow_cost_bps", ge=0, description="Round-trip cost (slippage and commission, basis points "
        "of notional) charged to a signal sized 0, which is followed without an order so that every exposure "
        "learns from it"
    )

    @model_validator(mode="after")
    def _exploration(self) -> SizingSettings:
        if self.epsilon_min > self.epsilon:
            raise ValueError("RL_SIZING_EPSILON_MIN must not exceed RL_SIZING_EPSILON")
        return self


class StateSettings(BaseModel):
    """The state a trade is learned under: its buckets"""

    model_config = _group_config("rl_state_")
    win_rate_window: int = Field(20, alias="rl_sizing_win_rate_window", ge=1,
                                 description="Performance bucket: win rate of the last N outcomes")
    high_vol_atr_pct: float = Field(0.02, gt=0, description="ATR/price above this is high volatility")
    trending_adx: float = Field(25.0, ge=0, le=100, description="ADX above this is a trend")
    ranging_adx: float = Field(20.0, ge=0, le=100, description="ADX below this is a range")
    confidence_edges: tuple[float, float, float, float] = Field(
        (0.45, 0.55, 0.70, 0.85), description="Confidence bucket edges, JSON list of 4"
    )
    exposure_edges: tuple[float, float, float] = Field(
        (0.5, 1.0, 2.0), description="Gross exposure / equity bucket edges (light | moderate | heavy | max), JSON list "
        "of 3"
    )
    performance_edges: tuple[float, float] = Field(
        (0.45, 0.60), description="Win-rate bucket edges (bad | neutral | good), JSON list of 2"
    )

    @model_validator(mode="after")
    def _ordered(self) -> StateSettings:
        self.bucket_edges()  # validates the edges
        return self

    def bucket_edges(self) -> BucketEdges:
        return BucketEdges(self.high_vol_atr_pct, self.trending_adx, self.ranging_adx, self.confidence_edges,
                           self.exposure_edges, self.performance_edges)


class ABSettings(BaseModel):
    """A/B test: the RL policy against a rule, on live signals (GET /v1/ab)"""

    model_config = _group_config("ab_")
    enabled: bool = Field(
        False, description="Split signals at random between the RL policy (SIZING_POLICY: qlearning or ppo) and "
        "AB_CONTROL, and compare the two arms' growth (GET /v1/ab). Both arms meet the same caps, and the Q agent "
        "learns from the trades of both"
    )
    rl_share: float = Field(0.5, gt=0, lt=1, description="The share of signals the RL policy sizes; AB_CONTROL "
                            "sizes the rest")
    control: Literal["atr", "fixed", "kelly"] = Field(
        "atr", description="The control arm: atr (the rule), fixed (SIZING_FIXED_EXPOSURE) or kelly "
        "(SIZING_KELLY_FRACTION of the Kelly exposure; 0.5: half Kelly)"
    )
    unit: Literal["signal", "symbol"] = Field(
        "signal", description="What is assigned to an arm: each signal, or each symbol (all of its signals)"
    )
    seed: int = Field(0, description="Seed of the assignment: a signal's arm is a hash of it and the signal id "
                      "(or symbol), so the same signal always gets the same arm")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="Significance level of the A/B verdict (two-sided)")
    power: float = Field(0.8, gt=0, lt=1, description="Planned power: GET /v1/ab says how many more trades would "
                         "detect the difference observed so far with this probability")


class RiskSettings(BaseModel):
    """Risk manager: hard caps no policy can exceed"""

    model_config = _group_config("rm_")
    max_leverage: float = Field(
        5.0, ge=1, description="Most leverage (notional / equity) a trade may use; also capped by the account's "
        "multiplier"
    )
    max_position_exposure: float = Field(
        3.0, gt=0, description="Largest notional of one position, as a multiple of equity"
    )
    max_position_usd: float | None = Field(
        None, gt=0, description="Optional fixed ceiling on one position's notional, USD (empty: none)"
    )
    min_position_usd: float = Field(
        100.0, ge=0, description="A smaller position is not placed; the signal is followed without an order"
    )
    risk_per_trade_pct: float = Field(
        0.005, gt=0, le=0.2, description="The ATR rule's risk: fraction of equity lost if the stop is hit"
    )
    max_risk_pct: float = Field(
        0.08, gt=0, le=0.5, description="No trade may lose more than this fraction of equity at its stop"
    )
    max_exposure: float = Field(
        3.0, gt=0, description="Gross exposure of all positions after the trade, as a multiple of equity"
    )
    maintenance_margin: float = Field(
        0.25, gt=0, lt=1, description="The broker's maintenance margin: equity below this share of the gross position "
        "value is liquidated. The simulator enforces it; the Q agent assumes it when it reckons what every exposure "
        "would have earned"
    )
    max_price_deviation: float = Field(
        0.05, gt=0, le=1, description="A signal's price may differ from the market's (the last bar's close) by at most "
        "this fraction; sizing, stops and caps always use the market's price"
    )
    max_daily_loss_pct: float | None = Field(
        0.10, gt=0, lt=1, description="Protection: equity this far below the day's start stops new exposure for the "
        "day (trading state REDUCING; empty: off)"
    )
    max_drawdown_pct: float | None = Field(
        0.30, gt=0, lt=1, description="Protection: equity this far below its peak halts trading until the operator "
        "sets ACTIVE (empty: off)"
    )
    loss_streak: int | None = Field(
        6, ge=1, description="Protection: after this many losing trades in a row, no new exposure for "
        "RM_LOSS_STREAK_COOLDOWN_HOURS (empty: off)"
    )
    loss_streak_cooldown_hours: float = Field(24.0, gt=0, description="How long the losing-streak cooldown lasts")
    max_trades_per_day: int | None = Field(
        None, ge=1, description="Protection: after this many trades placed in a (UTC) day, no new exposure until the "
        "next (empty: off)"
    )
    atr_stop_multiple: float = Field(2.0, gt=0, description="Stop distance in ATRs when a signal has none")
    atr_period: int = Field(14, ge=2, le=200, description="ATR and ADX period (Wilder), in bars")
    default_time_limit_hours: float | None = Field(
        240.0, gt=0, description="Close a trade after this long when the signal gives no limit (None: never)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> RiskSettings:
        if self.max_position_usd is not None and self.min_position_usd > self.max_position_usd:
            raise ValueError("RM_MIN_POSITION_USD must not exceed RM_MAX_POSITION_USD")
        if self.risk_per_trade_pct > self.max_risk_pct:
            raise ValueError("RM_RISK_PER_TRADE_PCT must not exceed RM_MAX_RISK_PCT")
        self.exposure_menu()
        return self

    def exposure_menu(self) -> tuple[float, ...]:
        """The Q agent's actions: 0 and the exposures up to the most any trade could be allowed."""
        top = min(self.max_leverage, self.max_position_exposure, self.max_exposure)
        if top < MIN_EXPOSURE:
            raise ValueError(f"RM_MAX_POSITION_EXPOSURE and RM_MAX_EXPOSURE must allow at least {MIN_EXPOSURE}x "
                             "equity: no exposure could be placed")
        return exposure_menu(top)


class SimSettings(BaseModel):
    """The simulated broker"""

    model_config = _group_config("sim_")
    symbols: tuple[str, ...] = Field(("SP500", "NASDAQ"), description="Bundled daily series to trade (when "
                                     "SIM_BARS is empty)")
    bars: tuple[str, ...] = Field(
        (), description="Bar files the simulated broker replays instead, one per symbol: CSV or Parquet with a date "
        "or timestamp column and open, high, low, close (volume optional), daily or intraday; each SYMBOL=PATH, or "
        "PATH named after its symbol. JSON list"
    )
    start: date | None = Field(
        None, description="First bar the simulated clock shows (empty: the first after the indicators' warm-up)"
    )
    initial_cash: float = Field(100_000.0, gt=0, description="Starting cash of the simulated account")
    multiplier: float = Field(4.0, ge=1, description="Margin multiplier of the simulated account")
    shorting_enabled: bool = Field(True, description="Whether the simulated account may sell short")
    slippage_bps: float = Field(2.0, ge=0, description="Adverse slippage on every fill, basis points")
    commission_bps: float = Field(1.0, ge=0, description="Commission on every fill, basis points of notional")
    bar_seconds: float = Field(
        5.0, gt=0, description="Wall-clock seconds per simulated bar while serving (the replay runs flat out)"
    )


class AlpacaSettings(BaseModel):
    """Alpaca (BROKER=alpaca)"""

    model_config = _group_config("alpaca_")
    api_key_id: SecretStr | None = Field(None, description="Alpaca API key id (never logged or returned)")
    api_secret_key: SecretStr | None = Field(None, description="Alpaca API secret key (never logged or returned)")
    paper: bool = Field(True, description="Trade the paper account. false means real money, and also needs "
                        "ALPACA_LIVE_TRADING_CONFIRMED=true")
    live_trading_confirmed: bool = Field(
        False, description="The second, explicit switch for real-money trading (only read when ALPACA_PAPER=false)"
    )
    data_feed: Literal["iex", "sip"] = Field("iex", description="Stock bar feed: iex (free) or sip (paid)")
    bar_timeframe: Literal["1Day", "1Hour", "15Min"] = Field(
        "1Day", description="Bars the ATR/ADX (and the PPO observation) are computed on; 1Day matches training"
    )
    poll_seconds: float = Field(
        30.0, gt=0, description="How often open trades are marked (drawdown, stops, time limits, outside closes)"
    )
    timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one Alpaca HTTP request")
    max_retries: int = Field(
        4, ge=0, le=10, description="Retries of a request that met a 5xx or a timeout (backoff with jitter); a 429 is "
        "waited out on the shared rate limit and spends no retry"
    )
    rate_limit_per_minute: float = Field(
        200.0, gt=0, description="Alpaca requests per minute this process sends at most (a token bucket shared by "
        "its threads; a 429 pauses it). Alpaca allows 200 per account: split it among the API and the workers"
    )
    account_max_age_seconds: float = Field(
        5.0, gt=0, description="How long a decision may use a cached Alpaca account (equity, exposure, buying "
        "power); a fill makes the next decision read it again, and orders filled since count as in flight"
    )
    trading_url: str | None = Field(None, description="Override of the trading API base URL (tests, proxies)")
    data_url: str | None = Field(None, description="Override of the market data API base URL")
    stream_url: str | None = Field(None, description="Override of the trade-updates websocket URL")


class Settings(BaseModel):
    """Every setting, a group per component. Built from values by variable name (`Settings(rm_max_leverage=2)`);
    `load_settings` reads them from the environment."""

    model_config = ConfigDict(frozen=True)
    service: ServiceSettings = ServiceSettings()
    bus: BusSettings = BusSettings()
    sizing: SizingSettings = SizingSettings()
    state: StateSettings = StateSettings()
    ab: ABSettings = ABSettings()
    risk: RiskSettings = RiskSettings()
    sim: SimSettings = SimSettings()
    alpaca: AlpacaSettings = AlpacaSettings()

    @model_validator(mode="before")
    @classmethod
    def _grouped(cls, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
        groups: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            if name not in VARIABLES:
                raise ValueError(f"{name.upper()} is not a setting")
            groups.setdefault(VARIABLES[name], {})[name] = value
        return groups

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.ab.enabled and (self.sizing.policy not in ("qlearning", "ppo") or not self.sizing.rl_enabled):
            raise ValueError("AB_ENABLED tests an RL policy against AB_CONTROL: it needs SIZING_POLICY qlearning or "
                             "ppo and RL_POSITION_SIZING_ENABLED=true")
        if self.service.broker == "alpaca":
            if self.alpaca.api_key_id is None or self.alpaca.api_secret_key is None:
                raise ValueError("BROKER=alpaca needs ALPACA_API_KEY_ID and ALPACA_API_SECRET_KEY")
            if not self.alpaca.paper and not self.alpaca.live_trading_confirmed:
                raise ValueError("ALPACA_PAPER=false trades real money: it also needs "
                                 "ALPACA_LIVE_TRADING_CONFIRMED=true; refusing to start")
        return self

    def variables(self) -> dict[str, Any]:
        """Every value by its variable's name in lower case, as `Settings` takes them."""
        return {k: v for group in GROUPS for k, v in getattr(self, group).model_dump(by_alias=True).items()}

    def replace(self, **changes: Any) -> Settings:
        """These settings with `changes` (by variable name), validated again."""
        return Settings(**{**self.variables(), **changes})


GROUPS: dict[str, type[BaseModel]] = {name: f.annotation for name, f in Settings.model_fields.items()}
# each variable's name in lower case -> the group it belongs to
VARIABLES = {f.alias: group for group, cls in GROUPS.items() for f in cls.model_fields.values()}


class _Reader(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)


# every variable as a field of its own, which pydantic-settings reads from the environment and the .env file
_Environment = create_model("_Environment", __base__=_Reader, **{
    f.alias: (f.annotation, copy(f)) for cls in GROUPS.values() for f in cls.model_fields.values()})


ENV_EXAMPLE_HEADER = """\
# sizer configuration. Copy to .env and edit; every variable is optional (these are the defaults).
# Lists are JSON. An empty value means the default. A bad value stops start-up with a message naming it.
"""


def env_example() -> str:
    """`.env.example` as it must read: every setting with its description and default (paths and unset
    values left empty), a section per group. Regenerate with
    `.venv/bin/python -c 'import backend.config as c; print(c.env_example(), end="")' > .env.example`."""

    def shown(value) -> str:
        if value is None or isinstance(value, Path):
            return ""
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, (tuple, list)):
            return json.dumps(list(value))
        return value.isoformat() if isinstance(value, date) else str(value)

    defaults = Settings().variables()
    sections = [f"# --- {cls.__doc__} ---\n\n" + "".join(
        f"# {f.description}\n{f.alias.upper()}={shown(defaults[f.alias])}\n" for f in cls.model_fields.values())
        for cls in GROUPS.values()]
    return ENV_EXAMPLE_HEADER + "\n" + "\n".join(sections)


class ConfigError(Exception):
    """Settings could not be loaded; the message names every bad variable."""


def load_settings(**overrides) -> Settings:
    """The environment, then the file SIZER_ENV_FILE names (default `.env`; empty: none; `_env_file` overrides
    it), then `overrides` (by variable name)."""
    env_file = overrides.pop("_env_file", os.environ.get("SIZER_ENV_FILE", ".env") or None)
    try:
        return Settings(**{**_Environment(_env_file=env_file).model_dump(exclude_unset=True), **overrides})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            named = [p for p in err["loc"] if p in VARIABLES]
            name = named[-1].upper() if named else "settings"
            secret = "KEY" in name or name == "settings"  # a group's or the whole's input holds every value
            shown = "" if secret else f" (got {err.get('input')!r})"  # never echo a secret
            lines.append(f"{name}: {err['msg']}{shown}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
