"""Every setting sizer reads, typed, defaulted and documented. `.env.example` mirrors this file.

Settings come from the environment (or a `.env` file) by their upper-case names. A bad value stops
start-up with a message naming the variable (see `load_settings`).
"""
from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.domain.rewards import FORMER_NAMES
from backend.domain.state import MIN_EXPOSURE, BucketEdges, exposure_menu


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, env_ignore_empty=True)

    # --- service -------------------------------------------------------------------------------
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
    sizer_api_key: SecretStr | None = Field(
        None,
        min_length=16,
        description="Required in the X-API-Key header of every /v1 request, reads included (see SIZER_OPEN_READS); "
        "/healthz, /metrics and the OpenAPI docs never need it. May be empty only while HOST is a loopback address",
    )
    sizer_open_reads: bool = Field(
        False, description="true: the GET endpoints under /v1 (trades, positions, outcomes, the Q-table, the agent, "
        "signals, reconciliation) answer without X-API-Key; whatever trades, sizes or teaches still needs it"
    )
    redis_url: str | None = Field(
        None, description="Redis for the event bus shared by the API and workers, e.g. redis://redis:6379/0 "
        "(empty: the embedded in-process bus)"
    )
    redis_prefix: str = Field(
        "sizer:", min_length=1, description="Prefix of every Redis key sizer uses (bus streams, hot trade state), "
        "so several deployments can share one Redis"
    )
    bus_claim_idle_ms: int = Field(
        60_000, ge=1_000, description="A Redis bus message unacknowledged this long (its consumer died) is retried"
    )
    bus_max_deliveries: int = Field(
        5, ge=1, description="A Redis bus message delivered this often without success goes to the dead-letter stream"
    )
    bus_stream_maxlen: int = Field(
        100_000, ge=1_000, description="Each Redis bus stream is trimmed to about this many messages"
    )
    worker_concurrency: int = Field(
        16, ge=1, le=24, description="Signals one worker sizes and places at once (threads; two signals for one "
        "symbol are never handled at the same time); also the Alpaca connections each process keeps"
    )

    # --- sizing policy -------------------------------------------------------------------------
    sizing_policy: Literal["qlearning", "ppo", "atr", "fixed", "kelly"] = Field(
        "qlearning", description="Which policy sizes trades: qlearning, ppo, atr (the rule), fixed (SIZING_FIXED_"
        "EXPOSURE) or kelly (SIZING_KELLY_FRACTION of the best exposure over all past trades); the ATR rule is "
        "always the fallback, and the Q-table learns from every trade whichever policy sized it"
    )
    sizing_fixed_exposure: float = Field(
        0.5, gt=0, description="SIZING_POLICY=fixed: every signal gets this exposure (notional / equity)"
    )
    sizing_kelly_fraction: float = Field(
        0.5, gt=0, le=1, description="SIZING_POLICY=kelly: the share of the estimated Kelly exposure (0.5: half Kelly)"
    )
    model_path: Path = Field(
        Path(__file__).resolve().parents[1] / "models" / "ppo-sizer" / "model.pt",
        description="PPO checkpoint served when SIZING_POLICY=ppo (default: the model shipped in models/)",
    )
    rl_position_sizing_enabled: bool = Field(True, description="False: every trade is sized by the ATR rule")
    rl_sizing_confidence_z: float = Field(
        1.28, ge=0, description="Only exposures whose expected reward less this many standard errors is above 0 may "
        "be taken (the best expected among them is): an edge that is not yet this clear gets no size (0: any "
        "positive estimate)"
    )
    rl_sizing_prior_trades: float = Field(
        50.0, ge=0, description="Before any trade the agent believes in no edge, as firmly as if this many trades had "
        "earned nothing; the evidence of real trades outweighs it as they accumulate"
    )
    rl_sizing_horizon_trades: float | None = Field(
        None, gt=1, description="Forgetting horizon: each state's older rewards fade with weight (1 - 1/N) per newer "
        "one, for markets that change (empty: remember everything equally)"
    )
    rl_sizing_epsilon: float = Field(
        0.0, ge=0, le=1, description="Initial exploration rate (a random exposure that fits the caps). Every trade "
        "teaches every exposure, so none is needed"
    )
    rl_sizing_epsilon_min: float = Field(0.0, ge=0, le=1, description="Exploration never decays below this")
    rl_sizing_epsilon_decay: float = Field(
        1.0, gt=0, le=1, description="Epsilon is multiplied by this after every learned trade (1.0: no decay)"
    )
    rl_sizing_reward: Annotated[Literal["shaped_pnl", "log_growth"],
                                BeforeValidator(lambda name: FORMER_NAMES.get(name, name))] = Field(
        "log_growth", description="Reward: log_growth (Kelly's objective) or shaped_pnl (the predecessors' pnl% on "
        "margin less time and drawdown penalties; its former name seed is read as shaped_pnl)"
    )
    rl_sizing_seed: int | None = Field(None, description="Seed of the exploration RNG (None: from the OS)")
    decision_report_hours: float = Field(
        720.0, gt=0, description="How long the outcome of a POST /v1/decisions decision may be reported (hours) "
        "before the decision expires unlearned"
    )
    rl_shadow_cost_bps: float = Field(
        6.0, ge=0, description="Round-trip cost (slippage and commission, basis points of notional) charged to a "
        "signal sized 0, which is followed without an order so that every exposure learns from it"
    )
    rl_sizing_win_rate_window: int = Field(20, ge=1, description="Performance bucket: win rate of the last N outcomes")
    rl_state_high_vol_atr_pct: float = Field(0.02, gt=0, description="ATR/price above this is high volatility")
    rl_state_trending_adx: float = Field(25.0, ge=0, le=100, description="ADX above this is a trend")
    rl_state_ranging_adx: float = Field(20.0, ge=0, le=100, description="ADX below this is a range")
    rl_state_confidence_edges: tuple[float, float, float, float] = Field(
        (0.45, 0.55, 0.70, 0.85), description="Confidence bucket edges, JSON list of 4"
    )
    rl_state_exposure_edges: tuple[float, float, float] = Field(
        (0.5, 1.0, 2.0), description="Gross exposure / equity bucket edges (light | moderate | heavy | max), JSON list "
        "of 3"
    )
    rl_state_performance_edges: tuple[float, float] = Field(
        (0.45, 0.60), description="Win-rate bucket edges (bad | neutral | good), JSON list of 2"
    )

    # --- A/B test: the RL policy against a rule, on live signals (GET /v1/ab) ------------------------
    ab_enabled: bool = Field(
        False, description="Split signals at random between the RL policy (SIZING_POLICY: qlearning or ppo) and "
        "AB_CONTROL, and compare the two arms' growth (GET /v1/ab). Both arms meet the same caps, and the Q agent "
        "learns from the trades of both"
    )
    ab_rl_share: float = Field(0.5, gt=0, lt=1, description="The share of signals the RL policy sizes; AB_CONTROL "
                               "sizes the rest")
    ab_control: Literal["atr", "fixed", "kelly"] = Field(
        "atr", description="The control arm: atr (the rule), fixed (SIZING_FIXED_EXPOSURE) or kelly "
        "(SIZING_KELLY_FRACTION of the Kelly exposure; 0.5: half Kelly)"
    )
    ab_unit: Literal["signal", "symbol"] = Field(
        "signal", description="What is assigned to an arm: each signal, or each symbol (all of its signals)"
    )
    ab_seed: int = Field(0, description="Seed of the assignment: a signal's arm is a hash of it and the signal id "
                         "(or symbol), so the same signal always gets the same arm")
    ab_alpha: float = Field(0.05, gt=0, lt=0.5, description="Significance level of the A/B verdict (two-sided)")
    ab_power: float = Field(0.8, gt=0, lt=1, description="Planned power: GET /v1/ab says how many more trades would "
                            "detect the difference observed so far with this probability")

    # --- risk manager: hard caps no policy can exceed --------------------------------------------
    rm_max_leverage: float = Field(
        5.0, ge=1, description="Most leverage (notional / equity) a trade may use; also capped by the account's "
        "multiplier"
    )
    rm_max_position_exposure: float = Field(
        3.0, gt=0, description="Largest notional of one position, as a multiple of equity"
    )
    rm_max_position_usd: float | None = Field(
        None, gt=0, description="Optional fixed ceiling on one position's notional, USD (empty: none)"
    )
    rm_min_position_usd: float = Field(
        100.0, ge=0, description="A smaller position is not placed; the signal is followed without an order"
    )
    rm_risk_per_trade_pct: float = Field(
        0.005, gt=0, le=0.2, description="The ATR rule's risk: fraction of equity lost if the stop is hit"
    )
    rm_max_risk_pct: float = Field(
        0.08, gt=0, le=0.5, description="No trade may lose more than this fraction of equity at its stop"
    )
    rm_max_exposure: float = Field(
        3.0, gt=0, description="Gross exposure of all positions after the trade, as a multiple of equity"
    )
    rm_maintenance_margin: float = Field(
        0.25, gt=0, lt=1, description="The broker's maintenance margin: equity below this share of the gross position "
        "value is liquidated. The simulator enforces it; the Q agent assumes it when it reckons what every exposure "
        "would have earned"
    )
    rm_max_price_deviation: float = Field(
        0.05, gt=0, le=1, description="A signal's price may differ from the market's (the last bar's close) by at most "
        "this fraction; sizing, stops and caps always use the market's price"
    )
    rm_max_daily_loss_pct: float | None = Field(
        0.10, gt=0, lt=1, description="Protection: equity this far below the day's start stops new exposure for the "
        "day (trading state REDUCING; empty: off)"
    )
    rm_max_drawdown_pct: float | None = Field(
        0.30, gt=0, lt=1, description="Protection: equity this far below its peak halts trading until the operator "
        "sets ACTIVE (empty: off)"
    )
    rm_loss_streak: int | None = Field(
        6, ge=1, description="Protection: after this many losing trades in a row, no new exposure for "
        "RM_LOSS_STREAK_COOLDOWN_HOURS (empty: off)"
    )
    rm_loss_streak_cooldown_hours: float = Field(24.0, gt=0, description="How long the losing-streak cooldown lasts")
    rm_max_trades_per_day: int | None = Field(
        None, ge=1, description="Protection: after this many trades placed in a (UTC) day, no new exposure until the "
        "next (empty: off)"
    )
    rm_atr_stop_multiple: float = Field(2.0, gt=0, description="Stop distance in ATRs when a signal has none")
    rm_atr_period: int = Field(14, ge=2, le=200, description="ATR and ADX period (Wilder), in bars")
    rm_default_time_limit_hours: float | None = Field(
        240.0, gt=0, description="Close a trade after this long when the signal gives no limit (None: never)"
    )

    # --- simulated broker -------------------------------------------------------------------------
    sim_symbols: tuple[str, ...] = Field(("SP500", "NASDAQ"), description="Bundled daily series to trade (when "
                                         "SIM_BARS is empty)")
    sim_bars: tuple[str, ...] = Field(
        (), description="Bar files the simulated broker replays instead, one per symbol: CSV or Parquet with a date "
        "or timestamp column and open, high, low, close (volume optional), daily or intraday; each SYMBOL=PATH, or "
        "PATH named after its symbol. JSON list"
    )
    sim_start: date | None = Field(
        None, description="First bar the simulated clock shows (empty: the first after the indicators' warm-up)"
    )
    sim_initial_cash: float = Field(100_000.0, gt=0, description="Starting cash of the simulated account")
    sim_multiplier: float = Field(4.0, ge=1, description="Margin multiplier of the simulated account")
    sim_shorting_enabled: bool = Field(True, description="Whether the simulated account may sell short")
    sim_slippage_bps: float = Field(2.0, ge=0, description="Adverse slippage on every fill, basis points")
    sim_commission_bps: float = Field(1.0, ge=0, description="Commission on every fill, basis points of notional")
    sim_bar_seconds: float = Field(
        5.0, gt=0, description="Wall-clock seconds per simulated bar while serving (the replay runs flat out)"
    )

    # --- Alpaca (BROKER=alpaca) -------------------------------------------------------------------
    alpaca_api_key_id: SecretStr | None = Field(None, description="Alpaca API key id (never logged or returned)")
    alpaca_api_secret_key: SecretStr | None = Field(None, description="Alpaca API secret key (never logged or returned)")
    alpaca_paper: bool = Field(True, description="Trade the paper account. false means real money, and also needs "
                               "ALPACA_LIVE_TRADING_CONFIRMED=true")
    alpaca_live_trading_confirmed: bool = Field(
        False, description="The second, explicit switch for real-money trading (only read when ALPACA_PAPER=false)"
    )
    alpaca_data_feed: Literal["iex", "sip"] = Field("iex", description="Stock bar feed: iex (free) or sip (paid)")
    alpaca_bar_timeframe: Literal["1Day", "1Hour", "15Min"] = Field(
        "1Day", description="Bars the ATR/ADX (and the PPO observation) are computed on; 1Day matches training"
    )
    alpaca_poll_seconds: float = Field(
        30.0, gt=0, description="How often open trades are marked (drawdown, stops, time limits, outside closes)"
    )
    alpaca_timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one Alpaca HTTP request")
    alpaca_max_retries: int = Field(
        4, ge=0, le=10, description="Retries of a request that met 429, 5xx or a timeout (backoff with jitter)"
    )
    alpaca_rate_limit_per_minute: float = Field(
        200.0, gt=0, description="Alpaca requests per minute this process sends at most (a token bucket shared by "
        "its threads; a 429 pauses it). Alpaca allows 200 per account: split it among the API and the workers"
    )
    alpaca_account_max_age_seconds: float = Field(
        5.0, gt=0, description="How long a decision may use a cached Alpaca account (equity, exposure, buying "
        "power); a fill makes the next decision read it again, and orders filled since count as in flight"
    )
    alpaca_trading_url: str | None = Field(None, description="Override of the trading API base URL (tests, proxies)")
    alpaca_data_url: str | None = Field(None, description="Override of the market data API base URL")
    alpaca_stream_url: str | None = Field(None, description="Override of the trade-updates websocket URL")

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if self.rm_max_position_usd is not None and self.rm_min_position_usd > self.rm_max_position_usd:
            raise ValueError("RM_MIN_POSITION_USD must not exceed RM_MAX_POSITION_USD")
        if self.rm_risk_per_trade_pct > self.rm_max_risk_pct:
            raise ValueError("RM_RISK_PER_TRADE_PCT must not exceed RM_MAX_RISK_PCT")
        if self.rl_sizing_epsilon_min > self.rl_sizing_epsilon:
            raise ValueError("RL_SIZING_EPSILON_MIN must not exceed RL_SIZING_EPSILON")
        if self.ab_enabled and (self.sizing_policy not in ("qlearning", "ppo") or not self.rl_position_sizing_enabled):
            raise ValueError("AB_ENABLED tests an RL policy against AB_CONTROL: it needs SIZING_POLICY qlearning or "
                             "ppo and RL_POSITION_SIZING_ENABLED=true")
        self.bucket_edges()  # validates the edges
        self.exposure_menu()
        if self.sizer_api_key is None and self.host not in LOOPBACK_HOSTS:
            raise ValueError(f"SIZER_API_KEY must be set when HOST is {self.host!r} (not a loopback address): "
                             "anyone who can reach the API could trade")
        if self.broker == "alpaca":
            if self.alpaca_api_key_id is None or self.alpaca_api_secret_key is None:
                raise ValueError("BROKER=alpaca needs ALPACA_API_KEY_ID and ALPACA_API_SECRET_KEY")
            if not self.alpaca_paper and not self.alpaca_live_trading_confirmed:
                raise ValueError("ALPACA_PAPER=false trades real money: it also needs "
                                 "ALPACA_LIVE_TRADING_CONFIRMED=true; refusing to start")
        return self

    def exposure_menu(self) -> tuple[float, ...]:
        """The Q agent's actions: 0 and the exposures up to the most any trade could be allowed."""
        top = min(self.rm_max_leverage, self.rm_max_position_exposure, self.rm_max_exposure)
        if top < MIN_EXPOSURE:
            raise ValueError(f"RM_MAX_POSITION_EXPOSURE and RM_MAX_EXPOSURE must allow at least {MIN_EXPOSURE}x "
                             "equity: no exposure could be placed")
        return exposure_menu(top)

    def bucket_edges(self) -> BucketEdges:
        return BucketEdges(
            high_vol_atr_pct=self.rl_state_high_vol_atr_pct,
            trending_adx=self.rl_state_trending_adx,
            ranging_adx=self.rl_state_ranging_adx,
            confidence=self.rl_state_confidence_edges,
            exposure=self.rl_state_exposure_edges,
            performance=self.rl_state_performance_edges,
        )


ENV_EXAMPLE_HEADER = """\
# sizer configuration. Copy to .env and edit; every variable is optional (these are the defaults).
# Lists are JSON. An empty value means the default. A bad value stops start-up with a message naming it.
"""


def env_example() -> str:
    """`.env.example` as it must read: every setting with its description and default (paths and unset
    values left empty). Regenerate with
    `.venv/bin/python -c 'import backend.config as c; print(c.env_example(), end="")' > .env.example`."""
    defaults = Settings(_env_file=None)

    def shown(value) -> str:
        if value is None or isinstance(value, Path):
            return ""
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, (tuple, list)):
            return json.dumps(list(value))
        return value.isoformat() if isinstance(value, date) else str(value)

    lines = [f"# {f.description}\n{name.upper()}={shown(getattr(defaults, name))}\n"
             for name, f in Settings.model_fields.items()]
    return ENV_EXAMPLE_HEADER + "\n" + "".join(lines)


class ConfigError(Exception):
    """Settings could not be loaded; the message names every bad variable."""


def load_settings(**overrides) -> Settings:
    """The environment, then the file SIZER_ENV_FILE names (default `.env`; empty: none), then `overrides`."""
    try:
        return Settings(**{"_env_file": os.environ.get("SIZER_ENV_FILE", ".env") or None, **overrides})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "_".join(str(p) for p in err["loc"] if isinstance(p, str)).upper() or "settings"
            secret = "KEY" in name or name == "settings"  # a model-level error's input holds every value
            shown = "" if secret else f" (got {err.get('input')!r})"  # never echo a secret
            lines.append(f"{name}: {err['msg']}{shown}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
