"""Signal -> decision -> order -> trade, exactly once per signal id."""
from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cache, partial
from typing import Any

from backend.brokers.base import Broker, OrderRequest, OrderRejected
from backend.domain.model import Decision, Signal
from backend.domain.trade import DECISION_ID_PREFIX, UNPLACED_TRADE_STATUSES, SignalRecord, Trade, TradeStatus
from backend.execution.group_commit import GroupCommit
from backend.execution.monitor import PositionMonitor
from backend.execution.ports import DuplicateSignal, NewTrade, SymbolBusy, TradeRepository
from backend.risk import RiskManager, SizingError
from backend.risk.trading_state import TradingGuard, TradingState

log = logging.getLogger(__name__)


def client_order_id(signal_id: str) -> str:
    """Deterministic, broker-safe (<= 128 chars, [a-z0-9-]) and the same on every replay of the signal."""
    return "sz-" + hashlib.sha256(signal_id.encode()).hexdigest()[:32]


@dataclass
class PendingOpening:
    """A signal sized to open a trade, on its way through the opening lock (`Executor._open`)."""

    signal: Signal
    decision: Decision  # confirmed, or decided again, under the lock
    recorded: Trade | DuplicateSignal | SymbolBusy | None = None  # None: refused when decided again
    error: SizingError | None = None  # its input could not be sized again: its own error, not its batch's


@dataclass(frozen=True)
class ExecutionResult:
    signal_id: str
    status: str  # placed | skipped (sized 0, followed without an order) | rejected | exit | canceled (a replay)
    reason: str
    decision: dict[str, Any] | None
    trade_id: int | None = None
    replayed: bool = False
    closed_trade_id: int | None = None


class Executor:
    def __init__(
        self, trades: TradeRepository, broker: Broker, risk: RiskManager, monitor: PositionMonitor,
        guard: TradingGuard, *, default_time_limit_hours: float | None,
    ) -> None:
        self._default_time_limit_hours = default_time_limit_hours
        self._trades = trades
        self._broker = broker
        self._risk = risk
        self._monitor = monitor
        self._guard = guard
        self._openings = GroupCommit(self._open)

    def evaluate_protections(self) -> None:
        """Let the protections see the account now (each bar or poll; after each placed trade, see `_submit`)."""
        if self._guard.protections:
            self._guard.evaluate(self._broker.account().equity)

    def handle(self, signal: Signal) -> ExecutionResult:
        seen, active = self._trades.admission(signal.signal_id, signal.symbol)
        if seen is not None:
            return self._replay(seen)
        if active is not None:
            return self._against_active(signal, active)
        decision = self._risk.decide(signal)  # SizingError (bad input) propagates: nothing is written
        if not (decision.approved or decision.skipped):
            return self._reject(signal, decision, decision.reasoning)
        opening = PendingOpening(signal, decision)
        self._openings(opening)  # with the openings waiting beside it, in one transaction (see _open)
        if opening.error is not None:
            raise opening.error
        decision, trade = opening.decision, opening.recorded
        if trade is None:  # decided again on a cache read since, and refused: rare
            return self._reject(signal, decision, decision.reasoning)
        if isinstance(trade, DuplicateSignal):  # a concurrent delivery of the same signal won the race
            return self._replay(self._trades.signal(signal.signal_id))
        if isinstance(trade, SymbolBusy):  # opened meanwhile by another worker, or the hot state lagged
            active = self._trades.active_trade(signal.symbol)
            if active is not None:
                return self._against_active(signal, active)
            return self._reject(signal, decision, f"another trade in {signal.symbol} became active first")
        if trade.shadow:
            log.info("skipped %s %s (sized 0, followed for learning): %s", signal.side.value, signal.symbol,
                     decision.reasoning)
            return ExecutionResult(trade.signal_id, "skipped", decision.reasoning, decision.to_json(), trade.id)
        return self._submit(trade, decision)

    def _open(self, openings: list[PendingOpening]) -> None:
        """Openings waiting for the opening lock together, in one transaction holding it: each one's size is
        confirmed against the in-flight notional read now plus that of the openings before it (decided again
        when it no longer fits), then all are recorded, in two statements, and committed once."""
        with self._trades.opening() as transaction:
            read = cache(partial(self._trades.in_flight_notional, opening=transaction))
            added = 0.0
            for o in openings:
                try:
                    o.decision = self._risk.confirm(o.signal, o.decision, lambda since, a=added: read(since) + a)
                except SizingError as exc:  # decided again on a newer bar, and its input no longer holds
                    o.error = exc
                    continue
                added += o.decision.size_usd if o.decision.approved else 0.0
            now = self._broker.now()
            taken = [o for o in openings if o.error is None and (o.decision.approved or o.decision.skipped)]
            recorded = self._trades.record_trades(transaction, [self._new_trade(o, now) for o in taken])
        for o, trade in zip(taken, recorded):
            o.recorded = trade

    def _new_trade(self, opening: PendingOpening, now: datetime) -> NewTrade:
        limit = opening.signal.time_limit_hours or self._default_time_limit_hours
        return NewTrade(opening.signal, opening.decision, client_order_id(opening.signal.signal_id),
                        opening.decision.equity, now, now + timedelta(hours=limit) if limit else None)

    def handle_queued(self, signal: Signal) -> ExecutionResult:
        """A signal a worker took from the queue. Its sender has had its 202, so input that cannot be sized
        (SizingError, or another ValueError) is answered by a stored rejection that GET /v1/signals/{id} shows:
        an error would only be retried, and dead-lettered, without a word to the sender."""
        try:
            return self.handle(signal)
        except ValueError as exc:
            reason = f"{exc.field}: {exc}" if isinstance(exc, SizingError) else f"invalid input: {exc}"
            log.warning("rejected %s (%s %s): %s", signal.signal_id, signal.side.value, signal.symbol, reason)
            return self._reject(signal, _blank(signal), reason)

    def decide(self, signal: Signal) -> Decision:
        """POST /v1/decisions: size a trade a bot will place elsewhere. A decision that could be taken (placed or
        sized 0) is stored under a new decision_id, which the bot reports its outcome under
        (PositionMonitor.report); it holds no symbol and sends nothing."""
        signal = replace(signal, signal_id=DECISION_ID_PREFIX + uuid.uuid4().hex)  # its id, and its A/B arm's key
        decision = self._risk.decide(signal)  # SizingError (bad input) propagates: nothing is written
        if not (decision.approved or decision.skipped):
            return decision
        decision = replace(decision, decision_id=signal.signal_id)
        self._trades.record_decision(signal, decision, client_order_id=client_order_id(signal.signal_id),
                                     equity=decision.equity, decided_at=self._broker.now())
        return decision

    def _submit(self, trade: Trade, decision: Decision) -> ExecutionResult:
        order = OrderRequest(
            client_order_id=trade.client_order_id,
            symbol=trade.symbol,
            side=trade.side,
            quantity=trade.quantity,
            stop_price=trade.stop_price,
            target_price=trade.target_price,
        )
        try:
            self._broker.submit(order)
        except OrderRejected as exc:  # a concurrent delivery's order is no refusal: submit returns it instead
            self._trades.reject_trade(trade.id, f"broker: {exc}")
            return ExecutionResult(trade.signal_id, "rejected", f"broker: {exc}", decision.to_json(), trade.id)
        log.info("placed %s %s %.6g %s ($%.2f at %.1fx, %s)", trade.client_order_id, trade.side.value, trade.quantity,
                 trade.symbol, trade.size_usd, trade.leverage, trade.policy)
        if self._guard.protections:
            self._guard.evaluate_after_trade(decision.equity)
        return ExecutionResult(trade.signal_id, "placed", decision.reasoning, decision.to_json(), trade.id)

    def _reject(self, signal: Signal, decision: Decision, reason: str) -> ExecutionResult:
        try:
            self._trades.record_signal(signal, decision, "rejected", reason)
        except DuplicateSignal:
            return self._replay(self._trades.signal(signal.signal_id))
        return ExecutionResult(signal.signal_id, "rejected", reason, decision.to_json())

    def _against_active(self, signal: Signal, active: Trade) -> ExecutionResult:
        """One active trade per symbol: a same-side signal is refused, the first opposite one closes the trade
        (later ones are refused while it closes), and one that finds the trade already closed is a new signal."""
        blank = _blank(signal)
        status = self._guard.status()
        if active.side != signal.side and status.state is TradingState.HALTED:
            return self._reject(signal, blank, f"trading state HALTED ({status.cause}: {status.reason}): no exit "
                                               "by signal; stops, targets and time limits still close it")
        if active.side == signal.side or active.status == TradeStatus.PENDING:
            shadow = " and sized 0, followed without an order" if active.shadow else ""
            return self._reject(signal, blank, f"trade {active.id} in {signal.symbol} is {active.status} "
                                               f"({active.side.value}{shadow}); one active trade per symbol")
        try:
            claimed = active.status == TradeStatus.OPEN and self._trades.record_exit(signal, blank, active.id)
        except DuplicateSignal:
            return self._replay(self._trades.signal(signal.signal_id))
        if not claimed:
            if self._trades.active_trade(signal.symbol) is None:  # it closed meanwhile (a stop): a new signal
                return self.handle(signal)
            return self._reject(signal, blank, f"exit of trade {active.id} in {signal.symbol} already requested")
        self._monitor.request_close(active, "opposite_signal")
        return ExecutionResult(signal.signal_id, "exit", f"closing trade {active.id}", None,
                               closed_trade_id=active.id)

    def _replay(self, seen: SignalRecord) -> ExecutionResult:
        """A signal id seen before: answer as the first time, and finish a submit a crash interrupted."""
        trade = self._trades.trade_for_signal(seen.signal_id)
        if (trade is not None and not trade.shadow and trade.status == TradeStatus.PENDING
                and self._broker.find_order(trade.client_order_id) is None):
            log.warning("re-submitting %s: its trade was stored but the order never reached the broker",
                        trade.client_order_id)
            result = self._submit(trade, Decision.from_json(seen.decision))
            return replace(result, replayed=True)
        ended = trade is not None and trade.status in UNPLACED_TRADE_STATUSES
        status = trade.status if ended else seen.status
        reason = trade.reason if ended else seen.reason
        return ExecutionResult(seen.signal_id, status, reason or seen.decision.get("reasoning", ""), seen.decision,
                               trade.id if trade else None, replayed=True)


def _blank(signal: Signal) -> Decision:
    """The decision stored with a signal that was never sized."""
    return Decision(
        approved=False, symbol=signal.symbol, side=signal.side, size_usd=0.0, quantity=0.0, leverage=1.0,
        price=signal.price or 0.0, stop_price=signal.stop_price or 0.0, target_price=signal.target_price,
        policy="none", reasoning="",
    )
