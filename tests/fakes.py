"""Test adapters for ports (pure unit tests only; integration tests use the real ones)."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import numpy as np

from backend.brokers.base import BrokerPosition, OrderAck, OrderRequest
from backend.domain.bars import Series
from backend.domain.model import Account, AssetRules, Decision, Signal
from backend.domain.trade import DECISION_ID_PREFIX, UNPLACED_TRADE_STATUSES, SignalRecord, Trade, TradeStatus
from backend.domain.trade import moves_to, utcnow
from backend.execution.executor import Executor
from backend.execution.monitor import PositionMonitor
from backend.execution.ports import Close, DuplicateSignal, NewTrade, SymbolBusy
from backend.risk import RiskManager
from backend.risk.trading_state import Status, TradingState
from backend.sizing.atr import AtrRule
from backend.sizing.fixed import FixedExposure
from backend.domain.state import ROOT_KEY, action_key
from backend.sizing.qlearning import Cell, Learning


def random_walk(n: int = 200, start: float = 100.0, vol: float = 0.01, seed: int = 0, symbol: str = "TEST") -> Series:
    rng = np.random.default_rng(seed)
    close = start * np.exp(np.cumsum(rng.normal(0, vol, n)))
    open_ = np.concatenate([[start], close[:-1]])
    spread = np.abs(rng.normal(0, vol, n)) * close
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    ts = np.datetime64("2010-01-01", "s") + np.arange(n) * np.timedelta64(1, "D")
    return Series(symbol, ts, open_, high, low, close, np.zeros(n))


class StaticBroker:
    """A broker frozen at one moment: a given account and bar history; records what it is sent."""

    name = "static"

    def __init__(self, account: Account, series: Series, asset: AssetRules = AssetRules()) -> None:
        self._account = account
        self._series = series
        self._asset = asset
        self.orders: list[OrderRequest] = []

    def now(self) -> datetime:
        return datetime(2020, 1, 1, tzinfo=timezone.utc)

    def health(self) -> str:
        return "ok (static)"

    def account(self) -> Account:
        return self._account

    def positions(self) -> list[BrokerPosition]:
        return []

    def history(self, symbol: str, count: int) -> Series:
        s = self._series
        return Series(symbol, s.ts[-count:], s.open[-count:], s.high[-count:], s.low[-count:], s.close[-count:],
                      s.volume[-count:])

    def submit(self, order: OrderRequest) -> OrderAck:
        self.orders.append(order)
        return OrderAck(order.client_order_id, order.client_order_id, "accepted", order.symbol, order.side)

    def find_order(self, client_order_id: str) -> OrderAck | None:
        return None

    def asset(self, symbol: str) -> AssetRules:
        return self._asset


class MemoryQTable:
    """The QTable port in memory, adding a Learning's rewards as the store does (decayed sums)."""

    def __init__(self, epsilon: float = 0.0) -> None:
        self.cells: dict[str, dict[str, Cell]] = {}
        self.epsilon = epsilon

    def q_cells(self, state_keys):
        return {k: dict(self.cells[k]) for k in state_keys if k in self.cells}, self.epsilon

    def add(self, learning: Learning) -> None:
        d = learning.decay
        for state, action, r in learning.rewards:
            c = self.cells.setdefault(state, {}).get(action, Cell())
            self.cells[state][action] = Cell(c.weight * d + 1, c.reward_sum * d + r, c.reward_sq_sum * d + r * r,
                                             c.visits + 1)


def experienced_cells(menu, trades: int = 2000, edge: float = 0.003, vol: float = 0.015) -> dict:
    """Q-table cells (all trades' level) as if `trades` trades had returned `edge` per unit of exposure on
    average with volatility `vol`: a clear edge, so a Q agent sizes instead of skipping."""
    cells = {}
    for e in menu:
        mean = 100 * (e * edge - (e * vol) ** 2 / 2)
        cells[(ROOT_KEY, action_key(e))] = Cell(trades, mean * trades, (mean**2 + (100 * e * vol) ** 2) * trades,
                                                trades)
    return cells


class MemoryTrades:
    """The trade repository in memory (tests/integration/test_trade_repository.py holds it to the same contract
    as the database's). `closes` keeps each recorded close, in order."""

    def __init__(self) -> None:
        self.signals: dict[str, SignalRecord] = {}
        self.by_id: dict[int, Trade] = {}
        self.closes: list[tuple[int, Close]] = []
        self._lock = threading.RLock()

    # --- signals
    def signal(self, signal_id):
        return self.signals.get(signal_id)

    def admission(self, signal_id, symbol):
        seen = self.signals.get(signal_id)
        return (seen, None) if seen is not None else (None, self.active_trade(symbol))

    def _add_signal(self, signal: Signal, decision: Decision, status: str, reason: str) -> None:
        if signal.signal_id in self.signals:
            raise DuplicateSignal(signal.signal_id)
        self.signals[signal.signal_id] = SignalRecord(signal.signal_id, signal.symbol, signal.side,
                                                      signal.confidence, decision.to_json(), status, reason, utcnow())

    def record_signal(self, signal, decision, status, reason):
        with self._lock:
            self._add_signal(signal, decision, status, reason)

    def record_exit(self, signal, decision, trade_id):
        with self._lock:
            trade = self.by_id.get(trade_id)
            if trade is None or trade.status != TradeStatus.OPEN or trade.exit_reason is not None:
                return False
            self._add_signal(signal, decision, "exit", f"opposite signal: closing trade {trade_id}")
            self.by_id[trade_id] = replace(trade, exit_reason="opposite_signal")
            return True

    # --- openings
    @contextmanager
    def opening(self):
        with self._lock:
            yield self

    def in_flight_notional(self, since=None, opening=None):
        with self._lock:
            return sum(t.size_usd for t in self.by_id.values() if not t.shadow
                       and not t.signal_id.startswith(DECISION_ID_PREFIX) and (
                           t.status == TradeStatus.PENDING or (since is not None and t.opened_at is not None
                                                               and t.opened_at >= since)))

    recent_in_flight_notional = in_flight_notional

    def record_trade(self, new: NewTrade) -> Trade:
        (recorded,) = self.record_trades(self, [new])
        if isinstance(recorded, Exception):
            raise recorded
        return recorded

    def record_trades(self, opening, trades):
        answers = []
        with self._lock:
            for t in trades:
                if t.signal.signal_id in self.signals:
                    answers.append(DuplicateSignal(t.signal.signal_id))
                elif self.active_trade(t.decision.symbol) is not None:
                    answers.append(SymbolBusy(t.decision.symbol))
                else:
                    answers.append(self._add_trade(t, TradeStatus.PENDING, "skipped" if t.decision.skipped else "placed"))
        return answers

    def _add_trade(self, new: NewTrade, status: TradeStatus, signal_status: str) -> Trade:
        self._add_signal(new.signal, new.decision, signal_status, "")
        trade = Trade(id=len(self.by_id) + 1, **new.fields(status))
        self.by_id[trade.id] = trade
        return trade

    def record_decision(self, signal, decision, *, client_order_id, equity, decided_at):
        with self._lock:
            self._add_trade(NewTrade(signal, decision, client_order_id, equity, decided_at, None),
                            TradeStatus.EXTERNAL, "decided")

    def flush_decisions(self):
        pass

    # --- trades
    def _first(self, **match) -> Trade | None:
        return next((t for t in self.by_id.values() if all(getattr(t, k) == v for k, v in match.items())), None)

    def trade_for_signal(self, signal_id):
        return self._first(signal_id=signal_id)

    def trade_by_order(self, client_order_id):
        return self._first(client_order_id=client_order_id)

    def active_trade(self, symbol):
        return next((t for t in self.active_trades() if t.symbol == symbol), None)

    def active_trades(self):
        return [t for t in self.by_id.values() if t.active]

    def trades_held_beside(self, trade, closed_at):
        if trade.decided_at is None:
            return 0
        return sum(1 for t in self.by_id.values() if t.id != trade.id and not t.signal_id.startswith(DECISION_ID_PREFIX)
                   and t.status not in (*UNPLACED_TRADE_STATUSES, TradeStatus.EXTERNAL) and t.decided_at is not None
                   and t.decided_at < closed_at and (t.closed_at is None or t.closed_at > trade.decided_at))

    # --- a trade's life
    def _move(self, trade_id: int, allowed, **values) -> bool:
        with self._lock:
            trade = self.by_id.get(trade_id)
            if trade is None or not allowed(trade):
                return False
            self.by_id[trade_id] = replace(trade, **values)
            return True

    def mark_open(self, trade_id, *, quantity, entry_price, at, commission):
        with self._lock:
            t = self.by_id.get(trade_id)
            if t is not None and (t.status == TradeStatus.PENDING or (
                    t.status == TradeStatus.OPEN and t.quantity < quantity)):
                self.by_id[trade_id] = replace(t, status=TradeStatus.OPEN, quantity=quantity, entry_price=entry_price,
                                               opened_at=t.opened_at or at, commission_usd=commission)

    def _to(self, status: TradeStatus):
        return lambda t: t.status in moves_to(status)

    def reject_trade(self, trade_id, reason):
        if self._move(trade_id, self._to(TradeStatus.REJECTED), status=TradeStatus.REJECTED, reason=reason):
            sid = self.by_id[trade_id].signal_id
            self.signals[sid] = replace(self.signals[sid], status="rejected", reason=reason)

    def cancel_trade(self, trade_id, reason):
        self._move(trade_id, self._to(TradeStatus.CANCELED), status=TradeStatus.CANCELED, reason=reason)

    def mark_closing(self, trade_id, reason):
        self._move(trade_id, self._to(TradeStatus.CLOSING), status=TradeStatus.CLOSING, exit_reason=reason)

    def release_exit(self, trade_id):
        self._move(trade_id, lambda t: t.status == TradeStatus.OPEN, exit_reason=None)

    def reopen(self, trade_id, note):
        self._move(trade_id, lambda t: t.status == TradeStatus.CLOSING, status=TradeStatus.OPEN, exit_reason=None,
                   reason=note)

    def update_adverse_excursions(self, worst):
        for trade_id, (price, pct) in worst.items():
            self._move(trade_id, lambda t: t.max_adverse_pct < pct or t.worst_price is None, max_adverse_pct=pct,
                       worst_price=price)

    def close(self, trade, close):
        with self._lock:
            if any(trade_id == trade.id for trade_id, _ in self.closes):
                return False
            current = self.by_id[trade.id]
            closed = self._move(trade.id, self._to(TradeStatus.CLOSED), status=TradeStatus.CLOSED,
                                exit_price=close.exit_price, exit_reason=close.exit_reason, closed_at=close.closed_at,
                                pnl_usd=close.outcome.pnl_usd, commission_usd=current.commission_usd + close.commission,
                                max_adverse_pct=close.outcome.max_drawdown_pct, **(close.reported or {}))
            if closed:
                self.closes.append((trade.id, close))
            return closed


DESK_ACCOUNT = Account(100_000.0, 100_000.0, 400_000.0, 4.0, True, 0.0)


class ActiveGuard:
    """A trading guard with no protections, always ACTIVE."""

    protections: list = []

    def status(self) -> Status:
        return Status(TradingState.ACTIVE, "", "no protection holds trading back", None)


@dataclass
class Desk:
    """An executor and a position monitor on the in-memory trade repository and a static broker: the money
    path without a database, sized by a fixed exposure."""

    trades: MemoryTrades
    broker: StaticBroker
    monitor: PositionMonitor
    executor: Executor

    @classmethod
    def build(cls, exposure: float = 0.5, broker: StaticBroker | None = None) -> Desk:
        from tests.conftest import make_settings  # conftest is pytest's: imported when a test runs

        settings = make_settings()
        trades = MemoryTrades()
        broker = broker or StaticBroker(DESK_ACCOUNT, random_walk())
        guard = ActiveGuard()
        risk = RiskManager(settings.risk, settings.state.bucket_edges(), broker, lambda: None, FixedExposure(exposure),
                           AtrRule(), guard.status, trades.recent_in_flight_notional)
        monitor = PositionMonitor(settings.sizing, trades, broker)
        executor = Executor(trades, broker, risk, monitor, guard, default_time_limit_hours=None)
        return cls(trades, broker, monitor, executor)
