"""Replay: the live engine (executor, risk manager, monitor) driven over bundled bars as fast as it goes.

Only the clock differs from serving: signals come from a built-in source that reads the bars up to
the current one (no look-ahead), and each loop step advances the simulated broker by one bar.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Callable, Iterable

import numpy as np

from backend.bootstrap import Service, build_service, make_sim_broker
from backend.brokers.base import EndOfData, SimulatedMarket
from backend.config import Settings
from backend.domain.bars import Series
from backend.data.signals import TimedSignal
from backend.domain.model import Side, Signal
from backend.domain.state import ALL_STATE_KEYS
from backend.risk import SizingError
from backend.sizing.base import SizingPolicy

SignalSource = Callable[[Service], Iterable[Signal]]  # the signals due at the current bar, reading bars up to it


class TrendSignals:
    """A plain trend follower: buy above the 20-bar mean after a rising week, sell below it after a falling
    week, signalling only when that view changes. Confidence grows with the distance from the mean in ATRs."""

    def __init__(self, symbols: Iterable[str], lookback: int = 20, momentum: int = 5) -> None:
        self._symbols = tuple(symbols)
        self._lookback = lookback
        self._momentum = momentum
        self._view: dict[str, Side | None] = {}

    def __call__(self, service: Service) -> list[Signal]:
        return [s for s in (self._signal(service, symbol) for symbol in self._symbols) if s is not None]

    def _signal(self, service: Service, symbol: str) -> Signal | None:
        bars = service.broker.history(symbol, self._lookback + 1)
        close = bars.close
        mean = close[-self._lookback:].mean()
        rising = close[-1] > close[-1 - self._momentum]
        side = Side.BUY if close[-1] > mean and rising else Side.SELL if close[-1] < mean and not rising else None
        changed = side is not None and side != self._view.get(symbol)
        self._view[symbol] = side if side is not None else self._view.get(symbol)
        if not changed:
            return None
        atr = service.risk.market(symbol, None).atr
        distance = abs(close[-1] - mean) / atr
        confidence = float(np.clip(0.35 + 0.3 * distance, 0.05, 0.99))
        day = service.broker.now().date().isoformat()
        return Signal(f"replay-{symbol}-{day}", symbol, side, confidence)


def trend_signals(series: dict[str, Series], settings: Settings) -> list[TimedSignal]:
    """The trend follower's signals over whole series, as `run_replay` would send them from the first bar after
    the indicators' warm-up (what `sizer train --signals trend` learns from): the same source on a clock of
    its own, since its signals do not depend on what was traded."""
    from types import SimpleNamespace

    from backend.risk.manager import RiskManager

    broker = make_sim_broker(settings.replace(sim_start=None), series)
    risk = RiskManager(settings.risk, settings.state.bucket_edges(), broker, None, None, None, None, None)
    service = SimpleNamespace(broker=broker, risk=risk)
    source, out = TrendSignals(broker.symbols), []
    while True:
        out += [TimedSignal(broker.calendar[broker.index], s) for s in source(service)]
        if broker.bars_left <= 0:
            return out
        broker.advance()

@dataclass(frozen=True)
class Curve:
    """The account bar by bar: dates and equity at each close (the first: the start), then per bar the gross
    exposure / equity held over it and the value traded at its fills / equity."""

    dates: np.ndarray  # datetime64[D]
    equity: np.ndarray
    exposure: np.ndarray
    turnover: np.ndarray


@dataclass(frozen=True)
class Summary:
    policy: str
    trades: int
    win_rate: float | None
    total_return: float
    max_drawdown: float
    signals: int
    visited_cells: int
    visited_states: int
    actions: int
    curve: "Curve"

    @property
    def coverage(self) -> float:
        return self.visited_cells / (len(ALL_STATE_KEYS) * self.actions)


def run_replay(
    settings: Settings, end: date | None = None, on_bar: Callable[[int, int], None] | None = None, *,
    broker: SimulatedMarket | None = None, policy: SizingPolicy | None = None, signals: SignalSource | None = None,
) -> Summary:
    """Run the whole loop from SIM_START (or `broker`'s first bar) to `end` (or the data's last bar) and
    summarise it. `signals` defaults to the trend follower on every symbol of the broker."""
    service = build_service(settings, broker=broker, policy=policy)
    try:
        signals = signals or TrendSignals(service.broker.symbols)
        end_ts = np.datetime64(end, "s") if end else None
        total = service.broker.bars_left if end_ts is None else service.broker.bars_until(end_ts)
        account = service.broker.account()
        dates, equity, exposure, traded = [service.broker.now().date()], [account.equity], [], []
        sent = 0
        for step in range(total):
            for signal in signals(service):
                sent += 1
                try:
                    service.executor.handle(signal)
                except SizingError:
                    pass  # e.g. too few bars yet for the indicators: nothing was written
            exposure.append(service.broker.account().exposure)
            try:
                fills = service.engine.step()
            except EndOfData:
                exposure.pop()
                break
            account = service.broker.account()
            dates.append(service.broker.now().date())
            equity.append(account.equity)
            traded.append(sum(abs(f.quantity) * f.price for f in fills) / equity[-2])
            if on_bar:
                on_bar(step + 1, total)
        curve = Curve(np.array(dates, dtype="datetime64[D]"), np.asarray(equity), np.asarray(exposure),
                      np.asarray(traded))
        return _summarise(service, curve, sent)
    finally:
        service.close()


def _summarise(service: Service, curve: Curve, sent: int) -> Summary:
    equity = curve.equity
    peak = np.maximum.accumulate(equity)
    outcomes = [o for o in service.store.outcomes.iter_outcomes() if o.exposure != 0]  # trades placed, not followed at size 0
    cells, states = service.store.q_table.q_coverage()
    return Summary(
        policy=service.risk.policy_name,
        trades=len(outcomes),
        win_rate=sum(o.won for o in outcomes) / len(outcomes) if outcomes else None,
        total_return=float(equity[-1] / equity[0] - 1),
        max_drawdown=float(np.max(1 - equity / peak)) if len(equity) else math.nan,
        signals=sent,
        visited_cells=cells,
        visited_states=states,
        actions=len(service.settings.risk.exposure_menu()),
        curve=curve,
    )
