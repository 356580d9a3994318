"""The composition root: the only place that picks concrete adapters and wires them together."""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import sqlalchemy.exc

from backend.brokers.alpaca import TIMEFRAMES, AlpacaBroker, TradeUpdates
from backend.brokers.base import BarHistory, Broker, BrokerUnavailable, SimulatedMarket
from backend.brokers.sim import SimBroker
from backend.bus.base import FILLS, ORDER_ENDS, SIGNALS, EventBus
from backend.bus.inprocess import InProcessBus
from backend.bus.redis_streams import RedisBus
from backend.config import Settings
from backend.data.files import load_market
from backend.domain.bars import Series
from backend.domain.rewards import REWARDS
from backend.execution.engine import Engine
from backend.execution.executor import Executor
from backend.execution.monitor import PENDING_GRACE_S, PositionMonitor
from backend.indicators import history_bars
from backend.prometheus import Metrics
from backend.risk import RiskManager
from backend.risk.protections import protections_from
from backend.risk.trading_state import TradingGuard
from backend.sizing.ab import Arms
from backend.sizing.atr import AtrRule
from backend.sizing.base import SizingPolicy
from backend.sizing.fixed import FixedExposure
from backend.sizing.qlearning import KellyPolicy, QLearningPolicy
from backend.store.db import make_engine, run_migrations
from backend.store.hot import HotTrades
from backend.store.repositories import Store
from backend.store.sim_journal import SimJournal
from backend.store.trading_state_repo import TradingStateRepository

log = logging.getLogger(__name__)


@dataclass
class Reconciliation:
    """The last start-up comparison of the store with the broker: every difference found, in words."""

    at: datetime
    broker: str
    differences: list[str]


@dataclass
class Service:
    settings: Settings
    store: Store
    broker: Broker
    risk: RiskManager
    monitor: PositionMonitor
    executor: Executor
    guard: TradingGuard
    metrics: Metrics
    bus: EventBus
    engine: Engine
    reconciliation: Reconciliation | None  # None in a worker: the API process reconciles
    trade_updates: TradeUpdates | None = None

    @property
    def queued(self) -> bool:
        """Signals go to the workers through Redis instead of being executed in this process."""
        return uses_workers(self.settings)

    @property
    def clock_seconds(self) -> float:
        """How often the engine steps while serving: one simulated bar, or one poll of a real broker."""
        s = self.settings
        return s.sim.bar_seconds if s.service.broker == "sim" else s.alpaca.poll_seconds

    def dead_letters(self) -> dict[str, int]:
        """How many events wait in each topic's dead-letter stream, with workers (none without)."""
        return self.bus.dead_letters((SIGNALS, FILLS, ORDER_ENDS)) if self.queued else {}

    def close(self) -> None:
        if self.trade_updates is not None:
            self.trade_updates.stop()
        self.store.close()


def uses_workers(settings: Settings) -> bool:
    """With REDIS_URL and a broker every process can reach, signals and broker events travel on Redis Streams
    to `sizer worker` processes. The simulated broker's account lives in one process: with it, everything
    stays in that process, as without REDIS_URL."""
    return settings.bus.redis_url is not None and settings.service.broker != "sim"


WORKER_GROUP = "workers"
# a handler failing with one of these waits for the dependency instead of spending the event's deliveries
TRANSIENT = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError,
             BrokerUnavailable)


def make_sim_broker(settings: Settings, series: dict[str, Series] | None = None) -> SimulatedMarket:
    """The simulator on `series` (default: SIM_BARS, else the bundled indices), its clock at SIM_START (default:
    the first bar after the warm-up)."""
    sim = settings.sim
    series = series or load_market(sim.bars, sim.symbols)
    calendar = next(iter(series.values())).ts
    warmup = history_bars(settings.risk.atr_period)  # the indicators' bars behind the clock at SIM_START
    start = warmup if sim.start is None else int(np.searchsorted(calendar, np.datetime64(sim.start, "s")))
    if start < warmup or start >= len(calendar) - 1:
        raise ValueError(
            f"SIM_START {sim.start or '(the first bar after the warm-up)'} leaves too few bars: the data "
            f"runs {calendar[0].astype('datetime64[D]')}..{calendar[-1].astype('datetime64[D]')} "
            f"({len(calendar)} bars) and the indicators need {warmup} bars before the start"
        )
    return SimBroker(
        series,
        start_index=start,
        initial_cash=sim.initial_cash,
        multiplier=sim.multiplier,
        shorting_enabled=sim.shorting_enabled,
        slippage_bps=sim.slippage_bps,
        commission_bps=sim.commission_bps,
        maintenance_margin=settings.risk.maintenance_margin,
    )


def make_broker(settings: Settings) -> Broker:
    return alpaca_broker(settings) if settings.service.broker == "alpaca" else make_sim_broker(settings)


def alpaca_broker(settings: Settings) -> AlpacaBroker:
    return AlpacaBroker(settings.alpaca, connections=settings.bus.worker_concurrency)


BAR_TIMEFRAMES = tuple(TIMEFRAMES)  # what make_bar_history can download


def make_bar_history(settings: Settings) -> BarHistory:
    """Where `sizer data fetch` downloads bars: Alpaca's data API (the ALPACA_* keys), whatever BROKER says."""
    return alpaca_broker(settings)


def make_q_agent(settings: Settings, store: Store) -> QLearningPolicy:
    """The Q-learning agent. It learns from every closed trade, whichever policy sized it."""
    sizing = settings.sizing
    return QLearningPolicy(store.q_table, settings.risk.exposure_menu(), REWARDS[sizing.reward],
                           confidence_z=sizing.confidence_z, prior_trades=sizing.prior_trades,
                           horizon_trades=sizing.horizon_trades,
                           maintenance=settings.risk.maintenance_margin, rng=random.Random(sizing.seed),
                           epsilon_decay=sizing.epsilon_decay, epsilon_min=sizing.epsilon_min)


def make_policy(settings: Settings, q_agent: QLearningPolicy, store: Store, broker: Broker,
                fallback: AtrRule, name: str | None = None) -> SizingPolicy:
    """The policy `name` (default: SIZING_POLICY) sizes with."""
    name = name or settings.sizing.policy
    if not settings.sizing.rl_enabled or name == "atr":
        return fallback
    if name == "ppo":
        from backend.rl.checkpoint import load  # torch is imported only when a model is served
        from backend.sizing.ppo import PPOPolicy, PPOSizingPolicy

        loaded = load(settings.sizing.model_path)
        if loaded.kind == "sizing":
            return PPOSizingPolicy(loaded, broker, broker.account().equity, settings.risk.default_time_limit_hours)
        return PPOPolicy(loaded, broker, reference_equity=broker.account().equity)
    if name == "fixed":
        return FixedExposure(settings.sizing.fixed_exposure)
    if name == "kelly":
        return KellyPolicy(store.q_table, settings.risk.exposure_menu(), settings.sizing.kelly_fraction)
    return q_agent


def build_service(settings: Settings, *, broker: Broker | None = None, worker: bool = False,
                  policy: SizingPolicy | None = None, keep_sim: bool = False) -> Service:
    """The service for `sizer serve` or, with `worker`, for `sizer worker`. With workers (uses_workers) the API
    process validates and enqueues signals, listens to the broker's trade updates (publishing them on the bus),
    polls open trades and reconciles at start-up; the workers consume SIGNALS, FILLS and ORDER_ENDS. `broker`
    and `policy` replace the configured ones (backtests on generated markets, benchmarks; with AB_ENABLED,
    `policy` is the RL arm). `keep_sim` (serve): the simulated broker's account is kept in the database and
    resumed at start-up, so a restart changes nothing."""
    if settings.service.auto_migrate:
        run_migrations(settings.service.database_url)
    distributed = uses_workers(settings)
    bus: EventBus = RedisBus.from_settings(settings.bus, WORKER_GROUP, TRANSIENT) if distributed else InProcessBus()
    hot = HotTrades(bus.client, bus.prefix) if distributed else None
    store = Store.open(make_engine(settings.service.database_url), hot)
    store.q_table.ensure_agent(settings.sizing.epsilon)
    if hot is not None:
        hot.rebuild(store.trades.active_trades())
    if broker is None:
        broker = make_broker(settings)
        if keep_sim and isinstance(broker, SimBroker):
            resumed = broker.keep_in(SimJournal(store.engine, broker.fingerprint))
            log.info("simulated account %s at %s", "resumed" if resumed else "started", broker.now())
    metrics = Metrics()
    atr = AtrRule()
    q_agent = make_q_agent(settings, store)
    policy = policy or make_policy(settings, q_agent, store, broker, atr)
    window = settings.state.win_rate_window
    guard = TradingGuard(TradingStateRepository(store.engine), protections_from(settings.risk), broker.now)
    arms = None
    ab = settings.ab
    if ab.enabled:  # `policy` is the RL arm
        arms = Arms(policy, make_policy(settings, q_agent, store, broker, atr, ab.control), ab.rl_share, ab.seed,
                    ab.unit == "symbol")
    risk = RiskManager(settings.risk, settings.state.bucket_edges(), broker,
                       lambda: store.outcomes.recent_win_rate(window), policy, atr, guard.status,
                       store.trades.recent_in_flight_notional, arms)

    def on_reward(trade, outcome, reward) -> None:
        metrics.rewards.labels(trade.policy, reward.fn).inc()
        metrics.reward_sum.labels(trade.policy).inc(reward.value)

    # with workers, a pending trade's order may be on its way from a worker until its message is reclaimed
    grace = 3 * settings.bus.claim_idle_ms / 1000 if distributed else PENDING_GRACE_S
    monitor = PositionMonitor(settings.sizing, store.trades, broker, learner=q_agent, on_reward=on_reward,
                              pending_grace_s=grace)
    executor = Executor(store.trades, broker, risk, monitor, guard,
                        default_time_limit_hours=settings.risk.default_time_limit_hours)
    engine = Engine(broker, bus, executor, monitor, risk)
    engine.listen(fills=worker or not distributed, signals=worker)
    trade_updates = reconciliation = None
    if not worker:
        if settings.service.broker == "alpaca":  # listening before reconciling: nothing falls between the two
            trade_updates = TradeUpdates(settings.alpaca, engine.on_trade_update)
            trade_updates.start()
        reconciliation = Reconciliation(broker.now(), broker.name, monitor.reconcile(alone=not distributed))
    log.info("sizer %s ready: policy %s, broker %s, bus %s, database %s", "worker" if worker else "service",
             policy.name, broker.name, "redis" if distributed else "in-process",
             store.engine.url.render_as_string(hide_password=True))
    return Service(settings, store, broker, risk, monitor, executor, guard, metrics, bus, engine, reconciliation,
                   trade_updates)
