"""The trading state: ACTIVE (trade), REDUCING (only orders that reduce exposure: exits), HALTED (nothing new).

The protections (backend/risk/protections/) and the operator (POST /v1/trading-state) move it; the strictest of
them wins. The process that runs the clock evaluates it each bar or poll, every process after its placed trades
(coalesced in a burst); every process reads it on each decision (cached by the store, at most a second stale in
another process). Protective exits (stops, targets, time limits) run in every state: they only ever reduce exposure.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, time, timezone
from enum import Enum
from typing import Callable, Protocol

from backend.store.trading_state_repo import TradingStateRepository

log = logging.getLogger(__name__)


class TradingState(str, Enum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"

    @property
    def severity(self) -> int:
        return list(TradingState).index(self)


@dataclass(frozen=True)
class Trip:
    """A protection's (or the operator's) verdict: at most this state, and why."""

    state: TradingState
    reason: str


@dataclass(frozen=True)
class History:
    """What a protection sees, at one moment of the market's clock. Days are UTC dates (a US session lies within
    one); "own" trades are the ones this account placed (no shadows, no decisions for bots trading elsewhere)."""

    now: datetime
    equity: float
    day_start_equity: float  # at the first evaluation of the day
    peak_equity: float  # the highest seen since the operator last set ACTIVE
    results: tuple[bool, ...]  # won? of own closed trades since the operator last set ACTIVE, oldest first
    last_close: datetime | None  # when the newest of them closed
    trades_today: int  # own trades placed since the day began


class Protection(Protocol):
    name: str

    def check(self, history: History) -> Trip | None:
        """The state this protection allows now, or None when it has nothing against trading."""


@dataclass(frozen=True)
class Status:
    state: TradingState
    cause: str  # the protection's name, "operator", or "" when nothing holds it back
    reason: str
    changed_at: datetime | None

    @property
    def allows_entries(self) -> bool:
        return self.state is TradingState.ACTIVE


class TradingGuard:
    RESULTS = 50  # the most recent own results a protection may look at

    def __init__(self, store: TradingStateRepository, protections: list[Protection], clock: Callable[[], datetime]) -> None:
        self._store = store
        self._protections = protections
        self._clock = clock
        self._evaluating = threading.Lock()
        self._due: float | None = None  # the equity of a trade placed since the running evaluation began
        self._due_lock = threading.Lock()

    def status(self) -> Status:
        row = self._store.trading_state()
        return Status(TradingState(row.state), row.cause, row.reason, row.changed_at)

    @property
    def protections(self) -> list[Protection]:
        return self._protections

    def changes(self, limit: int):
        return self._store.trading_state_changes(limit)

    def evaluate(self, equity: float) -> Status:
        """Run every protection on the account as it is now and store the strictest verdict; a change is logged
        with its cause."""
        row = self._store.trading_state(fresh=True)
        now = self._clock()
        day = now.date().isoformat()
        day_start = row.day_start_equity if row.day == day and row.day_start_equity is not None else equity
        peak = max(equity, row.peak_equity if row.peak_equity is not None else equity)
        results, last_close = self._store.own_results(since=row.reset_at, limit=self.RESULTS)
        midnight = datetime.combine(now.date(), time(0), tzinfo=timezone.utc)
        history = History(now, equity, day_start, peak, results, last_close, self._store.own_trades_since(midnight))
        verdicts = [(p.name, trip) for p in self._protections if (trip := p.check(history)) is not None]
        if row.manual_state is not None:
            verdicts.append(("operator", Trip(TradingState(row.manual_state), row.manual_reason)))
        cause, trip = max(verdicts, key=lambda v: v[1].state.severity,
                          default=("", Trip(TradingState.ACTIVE, "no protection holds trading back")))
        if (row.state, row.cause, row.reason, row.day, row.day_start_equity, row.peak_equity) != (
                trip.state.value, cause, trip.reason, day, day_start, peak):  # unchanged: no write, no row lock
            self._store.save_trading_state(now, trip.state.value, cause, trip.reason, day=day,
                                           day_start_equity=day_start, peak_equity=peak)
        if (row.state, row.cause) != (trip.state.value, cause):
            log.warning("trading state %s -> %s (%s): %s", row.state, trip.state.value, cause or "nothing holds it",
                        trip.reason)
        return self.status()

    def evaluate_after_trade(self, equity: float) -> None:
        """`evaluate` after a placed trade, from any thread: one evaluation at a time in this process, and one
        more after it for the trades placed while it ran, with the latest equity (a burst of openings costs a few
        evaluations, not one each)."""
        with self._due_lock:
            self._due = equity
        while self._evaluating.acquire(blocking=False):  # else the evaluation running sees `_due` when it ends
            try:
                with self._due_lock:
                    due, self._due = self._due, None
                if due is not None:
                    self.evaluate(due)
            finally:
                self._evaluating.release()
            with self._due_lock:
                if self._due is None:
                    return

    def set_by_operator(self, state: TradingState, reason: str, equity: float) -> Status:
        """REDUCING or HALTED hold until the operator sets ACTIVE again. ACTIVE clears the hold and acknowledges
        what tripped: the peak, the day's start and the losing streak start again from now."""
        now = self._clock()
        if state is TradingState.ACTIVE:
            self._store.reset_trading_state(now, equity)
        else:
            self._store.hold_trading_state(state.value, reason)
        return self.evaluate(equity)
