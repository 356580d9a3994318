"""The trade repository on SQLite and PostgreSQL (`backend.execution.ports.TradeRepository`). Money paths are
single transactions whose exactly-once guarantees come from unique constraints, not from checks done
beforehand."""
from __future__ import annotations

import logging
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, Iterator, Sequence

from sqlalchemy import Connection, Engine, Update, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from backend.domain.model import Decision, Signal
from backend.domain.trade import (
    ACTIVE_TRADE_STATUSES,
    UNPLACED_TRADE_STATUSES,
    SignalRecord,
    Trade,
    TradeStatus,
    moves_to,
    utcnow,
)
from backend.execution.ports import Close, DuplicateSignal, NewTrade, SymbolBusy
from backend.store.cache import ReadCache
from backend.store.db import dialect_insert
from backend.store.hot import HotTrades
from backend.store.qtable import SqlQTable
from backend.store.tables import DECISION_ID_PREFIX, OWN_TRADE, OutcomeRow, SignalRow, TradeRow

log = logging.getLogger(__name__)
SIGNALS, TRADES, OUTCOMES = SignalRow.__table__, TradeRow.__table__, OutcomeRow.__table__
TRADE_FIELDS = tuple(f.name for f in fields(Trade))
SIGNAL_FIELDS = tuple(f.name for f in fields(SignalRecord))
OPENING_LOCK = 0x5132_0001  # PostgreSQL advisory lock key: opening decisions, across processes
IN_FLIGHT = ("in_flight",)  # the read cache's key of the in-flight notional


def to_trade(row: Any) -> Trade | None:
    return None if row is None else Trade(**{f: getattr(row, f) for f in TRADE_FIELDS})


def to_signal(row: Any) -> SignalRecord | None:
    return None if row is None else SignalRecord(**{f: getattr(row, f) for f in SIGNAL_FIELDS})


@dataclass
class Opening:
    """A transaction of openings, holding the opening lock (`SqlTrades.opening`)."""

    connection: Connection
    trades: list[Trade] = field(default_factory=list)  # the pending trades recorded in it: hot once it commits


class SqlTrades:
    def __init__(self, engine: Engine, cache: ReadCache, q_table: SqlQTable, hot: HotTrades | None = None) -> None:
        self.engine = engine
        self.hot = hot
        self._cache = cache
        self._q_table = q_table
        # single reads need no transaction: without one, a read costs no BEGIN and ROLLBACK round trips
        self._reads = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._decisions = BatchWriter(engine)
        self._opening_lock = threading.Lock()
        # each row that conflicts (a signal seen before, a symbol's second active trade) is left out, not an error;
        # run as an executemany, whose statement is compiled once whatever the number of rows
        new = dialect_insert(engine)
        self._new_signals = new(SIGNALS).on_conflict_do_nothing().returning(SIGNALS.c.signal_id)
        self._new_trades = new(TRADES).on_conflict_do_nothing().returning(TRADES.c.signal_id, TRADES.c.id)

    def _one(self, query) -> Any:
        with self._reads.connect() as c:
            return c.execute(query).first()

    # --- signals ----------------------------------------------------------------------------------
    def signal(self, signal_id: str) -> SignalRecord | None:
        return to_signal(self._one(select(SIGNALS).where(SIGNALS.c.signal_id == signal_id)))

    def reasonings(self, signal_ids: list[str]) -> dict[str, str]:
        """Each signal's decision, in its own words (the trade keeps the decision's numbers, not its words)."""
        with self._reads.connect() as c:
            rows = c.execute(select(SIGNALS.c.signal_id, SIGNALS.c.decision).where(SIGNALS.c.signal_id.in_(signal_ids)))
            return {signal_id: (decision or {}).get("reasoning", "") for signal_id, decision in rows}

    def admission(self, signal_id: str, symbol: str) -> tuple[SignalRecord | None, Trade | None]:
        """What the executor reads before deciding, on one connection: the signal if it was seen before, else
        the symbol's active trade. With a hot state, a "no active trade" hash is taken as it is (the
        one-active-trade index guards the open anyway) and a "busy" one is confirmed in the database, so a hash
        that lags the database can cost a query, never a wrong answer."""
        with self._reads.connect() as c:
            seen = c.execute(select(SIGNALS).where(SIGNALS.c.signal_id == signal_id)).first()
            if seen is not None:
                return to_signal(seen), None
            busy = self.hot.busy(symbol) if self.hot is not None else None
            if busy is False:
                return None, None
            trade = to_trade(c.execute(_active(symbol)).first())
        if busy and trade is None:
            self.hot.sync(symbol, None)
        return None, trade

    def record_signal(self, signal: Signal, decision: Decision, status: str, reason: str) -> None:
        """A signal that placed no order (rejected, or an exit of the active trade)."""
        try:
            with self.engine.begin() as c:
                c.execute(insert(SIGNALS), _signal_values(signal, decision, status, reason))
        except IntegrityError:
            raise DuplicateSignal(signal.signal_id) from None

    def record_exit(self, signal: Signal, decision: Decision, trade_id: int) -> bool:
        """Store an opposite signal as the exit of the open trade `trade_id`, if it is the first to claim it: one
        conditional UPDATE decides between concurrent ones. False: the trade is no longer open or another signal
        claimed its exit; nothing is written."""
        claim = (update(TRADES).where(TRADES.c.id == trade_id, TRADES.c.status == TradeStatus.OPEN,
                                      TRADES.c.exit_reason.is_(None)).values(exit_reason="opposite_signal"))
        try:
            with self.engine.begin() as c:
                if c.execute(claim).rowcount != 1:
                    return False
                c.execute(insert(SIGNALS), _signal_values(signal, decision, "exit",
                                                          f"opposite signal: closing trade {trade_id}"))
        except IntegrityError:
            raise DuplicateSignal(signal.signal_id) from None
        return True

    # --- openings ---------------------------------------------------------------------------------
    @contextmanager
    def opening(self) -> Iterator[Opening]:
        """A transaction of openings, from their in-flight read to their pending trades, holding the opening lock:
        one at a time, so each sees the exposure of those before it. On PostgreSQL an advisory lock that every
        worker shares, released by the commit; elsewhere a lock in this process."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.begin() as c:
                c.execute(select(func.pg_advisory_xact_lock(OPENING_LOCK)))
                yield (opening := Opening(c))
        else:
            with self._opening_lock, self.engine.begin() as c:
                yield (opening := Opening(c))
        if opening.trades:
            self._cache.drop(IN_FLIGHT)
            if self.hot is not None:
                self.hot.sync_many({trade.symbol: trade for trade in opening.trades})

    def in_flight_notional(self, since: datetime | None = None, opening: Opening | None = None) -> float:
        """The notional of this account's entry orders sent or about to be (pending trades): exposure the broker's
        positions do not show yet, which every cap on gross exposure must count. `since`: the time of a cached
        account read; entries filled after it are missing from that account too, so they count as well.
        `opening`: read in that transaction (`opening()`), after every opening before it."""
        in_flight = TradeRow.status == TradeStatus.PENDING
        if since is not None:
            in_flight |= TradeRow.opened_at >= since
        query = select(func.coalesce(func.sum(TradeRow.size_usd), 0.0)).where(in_flight, *OWN_TRADE)
        if opening is not None:
            return float(opening.connection.scalar(query))
        with self._reads.connect() as c:
            return float(c.scalar(query))

    def recent_in_flight_notional(self, since: datetime | None = None) -> float:
        """`in_flight_notional`, cached as the decision path's other reads are (dropped at once by this process's
        openings): for sizing before the opening lock, under which every opening reads it afresh."""
        return self._cache.get(IN_FLIGHT, lambda: self.in_flight_notional(since), version=since)

    def record_trade(self, new: NewTrade) -> Trade:
        """One trade and its signal in an opening of its own (`record_trades`); DuplicateSignal or SymbolBusy
        when it cannot be recorded."""
        with self.opening() as opening:
            (recorded,) = self.record_trades(opening, [new])
        if isinstance(recorded, Exception):
            raise recorded
        return recorded

    def record_trades(self, opening: Opening, trades: Sequence[NewTrade]) -> list[Trade | DuplicateSignal |
                                                                                   SymbolBusy]:
        """Each signal and its pending trade, in `opening`'s transaction, before the orders are sent: a crash
        after it leaves trades that the executor re-submits under the same client order ids on replay. A
        decision sized 0 (skipped) gets a shadow trade, which no order ever belongs to. Two statements however
        many trades: a signal seen before gives DuplicateSignal and a symbol with an active trade SymbolBusy, in
        its place in the answer, and leave nothing behind."""
        c = opening.connection
        signals, values, answer = {}, {}, {}
        for t in trades:
            sid = t.signal.signal_id
            if sid in signals:  # two deliveries of one signal in one batch: the first is the one
                answer[id(t)] = DuplicateSignal(sid)
                continue
            status = "skipped" if t.decision.skipped else "placed"
            signals[sid] = _signal_values(t.signal, t.decision, status, "")
            values[sid] = t.fields(TradeStatus.PENDING)
        new = set(c.scalars(self._new_signals, list(signals.values()))) if signals else set()
        rows = [values[sid] for sid in signals if sid in new]
        ids = dict(c.execute(self._new_trades, rows).all()) if rows else {}
        busy = new - set(ids)
        if busy:  # the one-active-trade-per-symbol index refused these trades: their signals go too
            c.execute(delete(SIGNALS).where(SIGNALS.c.signal_id.in_(busy)))
        for t in trades:
            sid = t.signal.signal_id
            if id(t) in answer:
                continue
            if sid in ids:
                trade = Trade(id=ids[sid], **values[sid])
                opening.trades.append(trade)
                answer[id(t)] = trade
            else:
                answer[id(t)] = DuplicateSignal(sid) if sid not in new else SymbolBusy(t.decision.symbol)
        return [answer[id(t)] for t in trades]

    def record_decision(self, signal: Signal, decision: Decision, *, client_order_id: str, equity: float,
                        decided_at: datetime) -> None:
        """A POST /v1/decisions decision, traded elsewhere: a trade with status `external` that waits for its
        reported outcome and holds no symbol. It is written behind the answer, in batches (a decision moves no
        money; a crash loses at most the last moment's, whose reports then get 404)."""
        new = NewTrade(signal, decision, client_order_id, equity, decided_at, None)
        self._decisions.put((_signal_values(signal, decision, "decided", ""), new.fields(TradeStatus.EXTERNAL)))

    def flush_decisions(self) -> None:
        """Wait until every decision recorded so far is written."""
        self._decisions.flush()

    # --- trades -----------------------------------------------------------------------------------
    def trade_for_signal(self, signal_id: str) -> Trade | None:
        return to_trade(self._one(select(TRADES).where(TRADES.c.signal_id == signal_id)))

    def trade_by_order(self, client_order_id: str) -> Trade | None:
        return to_trade(self._one(select(TRADES).where(TRADES.c.client_order_id == client_order_id)))

    def active_trade(self, symbol: str) -> Trade | None:
        return to_trade(self._one(_active(symbol)))

    def active_trades(self) -> list[Trade]:
        return self._many(select(TRADES).where(TRADES.c.status.in_(ACTIVE_TRADE_STATUSES)).order_by(TRADES.c.id))

    def _many(self, query) -> list[Trade]:
        with self._reads.connect() as c:
            return [to_trade(row) for row in c.execute(query)]

    def trades(self, status: str | None, symbol: str | None, offset: int, limit: int) -> tuple[int, list[Trade]]:
        where = [TRADES.c.status == status] if status else []
        if symbol:
            where.append(TRADES.c.symbol == symbol)
        with self._reads.connect() as c:
            total = c.scalar(select(func.count()).select_from(TRADES).where(*where))
        return total, self._many(select(TRADES).where(*where).order_by(TRADES.c.id.desc()).offset(offset).limit(limit))

    def ab_trades(self) -> list[Trade]:
        """Closed trades (sized 0 included) that a live A/B test's arm sized."""
        return self._many(select(TRADES).where(TRADES.c.arm.is_not(None), TRADES.c.status == TradeStatus.CLOSED))

    def trades_held_beside(self, trade: Trade, closed_at: datetime) -> int:
        """How many other trades (placed or followed, not sized for bots trading elsewhere) were held at some
        time while this one was, on the market's clock: its outcome is not independent of theirs."""
        if trade.decided_at is None:
            return 0
        held = (TradeRow.id != trade.id, ~TradeRow.signal_id.startswith(DECISION_ID_PREFIX),
                TradeRow.status.notin_((*UNPLACED_TRADE_STATUSES, TradeStatus.EXTERNAL)),
                TradeRow.decided_at.is_not(None), TradeRow.decided_at < closed_at,
                (TradeRow.closed_at.is_(None)) | (TradeRow.closed_at > trade.decided_at))
        with self._reads.connect() as c:
            return int(c.scalar(select(func.count()).select_from(TradeRow).where(*held)))

    def decision_counts(self, horizon_hours: float) -> dict[str, int]:
        """POST /v1/decisions decisions: awaiting their report, reported, and expired unreported."""
        self.flush_decisions()
        cutoff = utcnow() - timedelta(hours=horizon_hours)
        decided = select(SignalRow.signal_id).where(SignalRow.status == "decided")
        waiting = TradeRow.status == TradeStatus.EXTERNAL
        with self._reads.connect() as c:
            row = c.execute(select(func.count().filter(waiting & (TradeRow.created_at >= cutoff)),
                                   func.count().filter(TradeRow.status == TradeStatus.CLOSED),
                                   func.count().filter(waiting & (TradeRow.created_at < cutoff)))
                            .where(TradeRow.signal_id.in_(decided))).one()
        return dict(zip(("awaiting_report", "reported", "expired"), row))

    # --- a trade's life -----------------------------------------------------------------------------
    def mark_open(self, trade_id: int, *, quantity: float, entry_price: float, at: datetime, commission: float) -> None:
        """The entry order has filled `quantity` so far (cumulative) at `entry_price` on average. Idempotent:
        a replayed or older (smaller) fill of an open trade changes nothing."""
        self._update_trade(
            update(TradeRow)
            .where(TradeRow.id == trade_id,
                   (TradeRow.status == TradeStatus.PENDING)
                   | ((TradeRow.status == TradeStatus.OPEN) & (TradeRow.quantity < quantity)))
            .values(status=TradeStatus.OPEN, quantity=quantity, entry_price=entry_price,
                    opened_at=func.coalesce(TradeRow.opened_at, at), commission_usd=commission)
        )

    def reject_trade(self, trade_id: int, reason: str) -> None:
        """The broker refused its entry: the trade and its signal are rejected."""
        with self.engine.begin() as c:
            signal_id = c.scalar(_moved(trade_id, TradeStatus.REJECTED, reason=reason).returning(TRADES.c.signal_id))
            if signal_id is not None:
                c.execute(update(SIGNALS).where(SIGNALS.c.signal_id == signal_id).values(status="rejected",
                                                                                        reason=reason))
        self._changed(trade_id)

    def cancel_trade(self, trade_id: int, reason: str) -> None:
        """An active trade the broker knows nothing of: no outcome, no reward."""
        self._update_trade(_moved(trade_id, TradeStatus.CANCELED, reason=reason))

    def mark_closing(self, trade_id: int, reason: str) -> None:
        self._update_trade(_moved(trade_id, TradeStatus.CLOSING, exit_reason=reason))

    def release_exit(self, trade_id: int) -> None:
        """An exit claimed by a signal was not sent: a later signal may claim it again."""
        self._update_trade(update(TradeRow).where(TradeRow.id == trade_id, TradeRow.status == TradeStatus.OPEN)
                           .values(exit_reason=None))

    def reopen(self, trade_id: int, note: str) -> None:
        """Its exit order ended unfilled: the trade is open again, so a later exit can be tried."""
        self._update_trade(update(TradeRow).where(TradeRow.id == trade_id, TradeRow.status == TradeStatus.CLOSING)
                           .values(status=TradeStatus.OPEN, exit_reason=None, reason=note))

    def _update_trade(self, statement: Update) -> None:
        """One trade's UPDATE. The row it changed, as committed, is written through to the hot state; one that
        changed nothing leaves the hash as it is (a lagging hash costs admission a query, never a wrong answer)."""
        with self.engine.begin() as c:
            trade = to_trade(c.execute(statement.returning(*TRADES.c)).first())
        if trade is not None and self.hot is not None:
            self.hot.sync(trade.symbol, trade)

    def _changed(self, trade_id: int) -> None:
        """Write the state of a trade's symbol, as committed, through to the hot state."""
        if self.hot is not None:
            with self._reads.connect() as c:
                symbol = c.scalar(select(TRADES.c.symbol).where(TRADES.c.id == trade_id))
                active = to_trade(c.execute(_active(symbol)).first())
            self.hot.sync(symbol, active)

    def update_adverse_excursions(self, worst: dict[int, tuple[float, float]]) -> None:
        """Raise each trade's max adverse excursion to the given (worst price, percent on margin); it never
        goes down."""
        if not worst:
            return
        with self.engine.begin() as c:
            for trade_id, (price, pct) in worst.items():
                c.execute(
                    update(TradeRow)
                    .where(TradeRow.id == trade_id, (TradeRow.max_adverse_pct < pct) | TradeRow.worst_price.is_(None))
                    .values(max_adverse_pct=pct, worst_price=price)
                )

    def close(self, trade: Trade, close: Close) -> bool:
        """Close the trade, record its outcome and add what it teaches to the Q-table, all or nothing.

        The outcome's unique trade_id makes this exactly-once: a replayed close returns False and changes
        nothing; so does the close of a trade whose status may not move to CLOSED (canceled meanwhile)."""
        outcome, reward = close.outcome, close.reward
        try:
            with self.engine.begin() as c:
                c.execute(insert(OUTCOMES).values(
                    trade_id=trade.id, symbol=trade.symbol, policy=trade.policy, state_key=trade.rl_state_key,
                    action_key=trade.rl_action_key, reward_fn=reward.fn, reward=reward.value,
                    exposure=outcome.exposure, trade_return=outcome.trade_return, pnl_usd=outcome.pnl_usd,
                    pnl_pct=outcome.pnl_pct, duration_hours=outcome.duration_hours,
                    max_drawdown_pct=outcome.max_drawdown_pct, won=outcome.won, closed_at=close.closed_at,
                    created_at=utcnow()))  # the unique trade_id decides here whether this close is the first
                closed = _moved(trade.id, TradeStatus.CLOSED, exit_price=close.exit_price,
                                exit_reason=close.exit_reason, closed_at=close.closed_at, pnl_usd=outcome.pnl_usd,
                                commission_usd=TradeRow.commission_usd + close.commission,
                                max_adverse_pct=outcome.max_drawdown_pct, **(close.reported or {}))
                if c.execute(closed).rowcount != 1:
                    raise _NotClosable
                if close.learning is not None:
                    self._q_table.learn(c, close.learning)
            self._cache.clear()
            first = True
        except (IntegrityError, _NotClosable):
            first = False
        self._changed(trade.id)
        return first


class _NotClosable(Exception):
    """The trade's status may not move to CLOSED: its close is rolled back."""


def _active(symbol: str):
    return select(TRADES).where(TRADES.c.symbol == symbol, TRADES.c.status.in_(ACTIVE_TRADE_STATUSES))


def _moved(trade_id: int, status: TradeStatus, **values) -> Update:
    """A trade's move to `status`, only from the statuses TRANSITIONS allows (a late or replayed event changes
    nothing)."""
    return (update(TradeRow).where(TradeRow.id == trade_id, TradeRow.status.in_(moves_to(status)))
            .values(status=status, **values))


def _signal_values(signal: Signal, decision: Decision, status: str, reason: str) -> dict[str, Any]:
    return dict(signal_id=signal.signal_id, symbol=signal.symbol, side=signal.side.value,
                confidence=signal.confidence, decision=decision.to_json(), status=status, reason=reason,
                received_at=utcnow())


class BatchWriter:
    """Writes (signal row, trade row) pairs on a thread of its own, as many per transaction as have queued up
    meanwhile. A dependency outage is waited out for a minute; after that a batch is logged and dropped."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, rows: tuple[dict, dict]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="decision-writer", daemon=True)
                self._thread.start()
        self._queue.put(rows)

    def flush(self) -> None:
        self._queue.join()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < 1000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._write(batch)
            for _ in batch:
                self._queue.task_done()

    def _write(self, batch: list[tuple[dict, dict]]) -> None:
        deadline = time.monotonic() + 60.0
        while True:
            try:
                with self._engine.begin() as c:
                    c.execute(insert(SIGNALS), [signal for signal, _ in batch])
                    c.execute(insert(TRADES), [trade for _, trade in batch])
                return
            except OperationalError as exc:
                if time.monotonic() > deadline:
                    log.error("%d decision(s) not written, the database is down (%s); their reports will get 404",
                              len(batch), exc)
                    return
                time.sleep(0.5)
