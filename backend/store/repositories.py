"""Everything sizer reads and writes in the database. Money paths are single transactions whose
exactly-once guarantees come from unique constraints, not from checks done beforehand."""
from __future__ import annotations

import logging
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator, Sequence

from sqlalchemy import Connection, Engine, Update, bindparam, case, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from backend.domain.model import (
    ACTIVE_TRADE_STATUSES,
    UNPLACED_TRADE_STATUSES,
    Decision,
    Outcome,
    Signal,
    TradeStatus,
)
from backend.sizing.qlearning import Cell, Learning
from backend.store.hot import HotTrades
from backend.store.tables import (
    DECISION_ID_PREFIX,
    OWN_TRADE,
    AgentRow,
    OutcomeRow,
    QValueRow,
    SignalRow,
    TradeRow,
    utcnow,
)

log = logging.getLogger(__name__)
AGENT = "qlearning"
SIGNAL_INSERT = SignalRow.__table__.insert()  # statements made once, so their compiled form is reused
READ_CACHE_MAX_AGE_S = 1.0
OPENING_LOCK = 0x5132_0001  # PostgreSQL advisory lock key: opening decisions, across processes
IN_FLIGHT = ("in_flight",)  # the read cache's key of the in-flight notional


class DuplicateSignal(Exception):
    """This signal id has been handled before."""


class SymbolBusy(Exception):
    """Another trade in this symbol is still active."""


@dataclass(frozen=True)
class Reward:
    value: float
    fn: str
    epsilon_decay: float
    epsilon_min: float


@dataclass
class Opening:
    """A transaction of openings, holding the opening lock (`Store.opening`)."""

    connection: Connection
    trades: list[TradeRow] = field(default_factory=list)  # the pending trades recorded in it: hot once it commits


@dataclass(frozen=True)
class NewTrade:
    """A trade to record with its signal, before its order is sent (`Store.record_trades`)."""

    signal: Signal
    decision: Decision
    client_order_id: str
    equity: float
    decided_at: datetime
    deadline_at: datetime | None


class Store:
    def __init__(self, engine: Engine, hot: HotTrades | None = None) -> None:
        self.engine = engine
        self.hot = hot
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # single reads need no transaction: without one, a read costs no BEGIN and ROLLBACK round trips
        self._reads = sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)
        dialect = engine.dialect.name
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self._read_cache: dict[tuple, tuple[float, Any, Any]] = {}
        self._decisions = BatchWriter(engine)
        self._opening_lock = threading.Lock()
        # each row that conflicts (a signal seen before, a symbol's second active trade) is left out, not an error;
        # run as an executemany, whose statement is compiled once whatever the number of rows
        signals, trades = SignalRow.__table__, TradeRow.__table__
        self._new_signals = self._insert(signals).on_conflict_do_nothing().returning(signals.c.signal_id)
        self._new_trades = self._insert(trades).on_conflict_do_nothing().returning(trades.c.signal_id, trades.c.id)
        cells = QValueRow.__table__
        insert = self._insert(cells)
        decay = bindparam("decay")
        self._add_cell = insert.on_conflict_do_update(  # add one reward to a cell, its earlier sums decayed
            index_elements=[cells.c.state_key, cells.c.action_key],
            set_=dict(visits=cells.c.visits + 1, weight=cells.c.weight * decay + insert.excluded.weight,
                      reward_sum=cells.c.reward_sum * decay + insert.excluded.reward_sum,
                      reward_sq_sum=cells.c.reward_sq_sum * decay + insert.excluded.reward_sq_sum,
                      updated_at=insert.excluded.updated_at),
        )

    def session(self) -> Session:
        return self._sessions()

    # --- agent ----------------------------------------------------------------------------------
    def ensure_agent(self, epsilon: float) -> None:
        """Create the agent row; a changed configured epsilon restarts the exploration schedule."""
        with self._sessions.begin() as s:
            s.execute(
                self._insert(AgentRow)
                .values(name=AGENT, epsilon_initial=epsilon, epsilon=epsilon, total_updates=0)
                .on_conflict_do_nothing()
            )
            row = s.get(AgentRow, AGENT)
            if row.epsilon_initial != epsilon:
                row.epsilon_initial = row.epsilon = epsilon

    def agent(self) -> AgentRow:
        with self._sessions() as s:
            row = s.get(AgentRow, AGENT)
            if row is None:
                raise LookupError("the agent row is missing: run migrations and start the service once")
            return row

    def epsilon(self) -> float:
        with self.engine.connect() as c:
            return c.scalar(select(AgentRow.epsilon).where(AgentRow.name == AGENT))

    # --- Q-table ------------------------------------------------------------------------------------
    def _cached(self, key: tuple, load: Callable[[], Any], version: Any = None) -> Any:
        """Reads on every decision's path change only when an outcome or an import is written. They are
        cached: dropped at once when this process writes, at most READ_CACHE_MAX_AGE_S old when another
        process does (several workers). `version`: what the value was read for; another one reads it again."""
        now = time.monotonic()
        hit = self._read_cache.get(key)
        if hit is not None and now - hit[0] < READ_CACHE_MAX_AGE_S and hit[2] == version:
            return hit[1]
        value = load()
        self._read_cache[key] = (now, value, version)
        return value

    def q_cells(self, state_keys: Sequence[str]) -> tuple[dict[str, dict[str, Cell]], float]:
        """The cells of these states {state: {action: cell}} and the current epsilon, in one query (cached, see
        _cached). The QTable port of the Q-learning policy."""
        keys = tuple(state_keys)
        return self._cached(("q", keys), lambda: self._load_cells(keys))

    def _load_cells(self, keys: tuple[str, ...]) -> tuple[dict[str, dict[str, Cell]], float]:
        q = QValueRow.__table__
        agent = AgentRow.__table__
        stmt = (
            select(agent.c.epsilon, q.c.state_key, q.c.action_key, q.c.weight, q.c.reward_sum, q.c.reward_sq_sum,
                   q.c.visits)
            .select_from(agent.outerjoin(q, q.c.state_key.in_(keys)))
            .where(agent.c.name == AGENT)
        )
        with self.engine.connect() as c:
            rows = c.execute(stmt).all()
        if not rows:
            raise LookupError("the agent row is missing: run migrations and start the service once")
        cells: dict[str, dict[str, Cell]] = {}
        for _, state, action, weight, s1, s2, visits in rows:
            if state is not None:
                cells.setdefault(state, {})[action] = Cell(weight, s1, s2, visits)
        return cells, rows[0][0]

    def q_values(self, state_key: str | None, offset: int, limit: int) -> tuple[int, list[QValueRow]]:
        with self._sessions() as s:
            where = [QValueRow.state_key == state_key] if state_key else []
            total = s.scalar(select(func.count()).select_from(QValueRow).where(*where))
            rows = s.scalars(
                select(QValueRow).where(*where).order_by(QValueRow.state_key, QValueRow.action_key)
                .offset(offset).limit(limit)
            ).all()
            return total, list(rows)

    def top_q_values(self, limit: int, min_visits: int) -> list[QValueRow]:
        """The full-state cells with the best average reward (pooled levels are left out)."""
        with self._sessions() as s:
            return list(
                s.scalars(
                    select(QValueRow)
                    .where(QValueRow.visits >= min_visits, QValueRow.weight > 0, ~QValueRow.state_key.contains("*"))
                    .order_by((QValueRow.reward_sum / QValueRow.weight).desc()).limit(limit)
                )
            )

    def q_coverage(self) -> tuple[int, int]:
        """(visited state-action cells, visited states), full states only."""
        with self._sessions() as s:
            visited = [QValueRow.visits > 0, ~QValueRow.state_key.contains("*")]
            cells = s.scalar(select(func.count()).select_from(QValueRow).where(*visited))
            states = s.scalar(select(func.count(func.distinct(QValueRow.state_key))).where(*visited))
            return cells, states

    def import_q_table(self, cells: dict[tuple[str, str], Cell], replace: bool) -> int:
        """Write cells (state, action) -> sums, replacing those with the same keys."""
        with self._sessions.begin() as s:
            if replace:
                s.query(QValueRow).delete()
            now = utcnow()
            for (state, action), cell in cells.items():
                s.merge(QValueRow(state_key=state, action_key=action, visits=cell.visits, weight=cell.weight,
                                  reward_sum=cell.reward_sum, reward_sq_sum=cell.reward_sq_sum, updated_at=now))
        self._read_cache.clear()
        return len(cells)

    # --- signals and trades ----------------------------------------------------------------------
    def signal(self, signal_id: str) -> SignalRow | None:
        with self._sessions() as s:
            return s.get(SignalRow, signal_id)

    def reasonings(self, signal_ids: list[str]) -> dict[str, str]:
        """Each signal's decision, in its own words (the trade row keeps the decision's numbers, not its words)."""
        with self._sessions() as s:
            rows = s.execute(select(SignalRow.signal_id, SignalRow.decision).where(SignalRow.signal_id.in_(signal_ids)))
            return {signal_id: (decision or {}).get("reasoning", "") for signal_id, decision in rows}

    def trade_for_signal(self, signal_id: str) -> TradeRow | None:
        with self._sessions() as s:
            return s.scalar(select(TradeRow).where(TradeRow.signal_id == signal_id))

    def record_signal(self, signal: Signal, decision: Decision, status: str, reason: str) -> None:
        """A signal that placed no order (rejected, or an exit of the active trade)."""
        with self._sessions.begin() as s:
            s.add(_signal_row(signal, decision, status, reason))
            try:
                s.flush()
            except IntegrityError:
                raise DuplicateSignal(signal.signal_id) from None

    def record_exit(self, signal: Signal, decision: Decision, trade_id: int) -> bool:
        """Store an opposite signal as the exit of the open trade `trade_id`, if it is the first to claim it: one
        conditional UPDATE decides between concurrent ones. False: the trade is no longer open or another signal
        claimed its exit; nothing is written."""
        with self._sessions.begin() as s:
            claim = (update(TradeRow).where(TradeRow.id == trade_id, TradeRow.status == TradeStatus.OPEN,
                                            TradeRow.exit_reason.is_(None)).values(exit_reason="opposite_signal"))
            if s.execute(claim).rowcount != 1:
                return False
            s.add(_signal_row(signal, decision, "exit", f"opposite signal: closing trade {trade_id}"))
            try:
                s.flush()
            except IntegrityError:
                raise DuplicateSignal(signal.signal_id) from None
        return True

    def record_trade(
        self,
        signal: Signal,
        decision: Decision,
        *,
        client_order_id: str,
        equity: float,
        decided_at: datetime,
        deadline_at: datetime | None,
    ) -> TradeRow:
        """One trade and its signal in an opening of its own (`record_trades`); DuplicateSignal or SymbolBusy
        when it cannot be recorded."""
        with self.opening() as opening:
            (recorded,) = self.record_trades(
                opening, [NewTrade(signal, decision, client_order_id, equity, decided_at, deadline_at)])
        if isinstance(recorded, Exception):
            raise recorded
        return recorded

    def record_trades(self, opening: Opening, trades: Sequence[NewTrade]) -> list[TradeRow | DuplicateSignal |
                                                                                   SymbolBusy]:
        """Each signal and its pending trade, in `opening`'s transaction, before the orders are sent: a crash
        after it leaves trades that the executor re-submits under the same client order ids on replay. A
        decision sized 0 (skipped) gets a shadow trade, which no order ever belongs to. Two statements however
        many trades (Core inserts: the ORM's unit of work costs more): a signal seen before gives DuplicateSignal
        and a symbol with an active trade SymbolBusy, in its place in the answer, and leave nothing behind."""
        c = opening.connection
        signals, values, answer = {}, {}, {}
        for t in trades:
            sid = t.signal.signal_id
            if sid in signals:  # two deliveries of one signal in one batch: the first is the one
                answer[id(t)] = DuplicateSignal(sid)
                continue
            status = "skipped" if t.decision.skipped else "placed"
            signals[sid] = _signal_values(t.signal, t.decision, status, "")
            values[sid] = _trade_values(t.signal, t.decision, t.client_order_id, t.equity, t.decided_at,
                                        t.deadline_at, TradeStatus.PENDING)
        new = set(c.scalars(self._new_signals, list(signals.values()))) if signals else set()
        rows = [values[sid] for sid in signals if sid in new]
        ids = dict(c.execute(self._new_trades, rows).all()) if rows else {}
        busy = new - set(ids)
        if busy:  # the one-active-trade-per-symbol index refused these trades: their signals go too
            c.execute(delete(SignalRow).where(SignalRow.signal_id.in_(busy)))
        for t in trades:
            sid = t.signal.signal_id
            if id(t) in answer:
                continue
            if sid in ids:
                trade = TradeRow(id=ids[sid], **values[sid])
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
        self._decisions.put((_signal_values(signal, decision, "decided", ""),
                             _trade_values(signal, decision, client_order_id, equity, decided_at, None, TradeStatus.EXTERNAL)))

    def flush_decisions(self) -> None:
        """Wait until every decision recorded so far is written."""
        self._decisions.flush()

    def reject_trade(self, trade_id: int, reason: str) -> None:
        with self._sessions.begin() as s:
            s.execute(update(TradeRow).where(TradeRow.id == trade_id).values(status=TradeStatus.REJECTED, reason=reason))
            trade = s.get(TradeRow, trade_id)
            s.execute(
                update(SignalRow).where(SignalRow.signal_id == trade.signal_id).values(status="rejected", reason=reason)
            )
        self._changed(trade_id)

    def active_trade(self, symbol: str) -> TradeRow | None:
        with self._sessions() as s:
            return s.scalar(
                select(TradeRow).where(TradeRow.symbol == symbol, TradeRow.status.in_(ACTIVE_TRADE_STATUSES))
            )

    def admission(self, signal_id: str, symbol: str) -> tuple[SignalRow | None, TradeRow | None]:
        """What the executor reads before deciding, in one database session: the signal if it was seen
        before, else the symbol's active trade. With a hot state, a "no active trade" hash is taken as it is
        (the one-active-trade index guards the open anyway) and a "busy" one is confirmed in the database, so
        a hash that lags the database can cost a query, never a wrong answer."""
        with self._reads() as s:
            seen = s.get(SignalRow, signal_id)
            if seen is not None:
                return seen, None
            busy = self.hot.busy(symbol) if self.hot is not None else None
            if busy is False:
                return None, None
            trade = s.scalar(select(TradeRow).where(TradeRow.symbol == symbol,
                                                    TradeRow.status.in_(ACTIVE_TRADE_STATUSES)))
        if busy and trade is None:
            self.hot.sync(symbol, None)
        return None, trade

    def trades_held_beside(self, trade: TradeRow, closed_at: datetime) -> int:
        """How many other trades (placed or followed, not sized for bots trading elsewhere) were held at some
        time while this one was, on the market's clock: its outcome is not independent of theirs."""
        if trade.decided_at is None:
            return 0
        held = (TradeRow.id != trade.id, ~TradeRow.signal_id.startswith(DECISION_ID_PREFIX),
                TradeRow.status.notin_((*UNPLACED_TRADE_STATUSES, TradeStatus.EXTERNAL)), TradeRow.decided_at.is_not(None),
                TradeRow.decided_at < closed_at,
                (TradeRow.closed_at.is_(None)) | (TradeRow.closed_at > trade.decided_at))
        with self._reads() as s:
            return int(s.scalar(select(func.count()).select_from(TradeRow).where(*held)))

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
        with self._reads() as s:
            return float(s.scalar(query))

    def recent_in_flight_notional(self, since: datetime | None = None) -> float:
        """`in_flight_notional`, cached as the decision path's other reads are (`_cached`; dropped at once by this
        process's openings): for sizing before the opening lock, under which every opening reads it afresh."""
        return self._cached(IN_FLIGHT, lambda: self.in_flight_notional(since), version=since)

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
            self._read_cache.pop(IN_FLIGHT, None)
            if self.hot is not None:
                self.hot.sync_many({trade.symbol: trade for trade in opening.trades})

    def active_trades(self) -> list[TradeRow]:
        with self._sessions() as s:
            return list(s.scalars(select(TradeRow).where(TradeRow.status.in_(ACTIVE_TRADE_STATUSES))))

    def trade_by_order(self, client_order_id: str) -> TradeRow | None:
        with self._sessions() as s:
            return s.scalar(select(TradeRow).where(TradeRow.client_order_id == client_order_id))

    def trades(self, status: str | None, symbol: str | None, offset: int, limit: int) -> tuple[int, list[TradeRow]]:
        with self._sessions() as s:
            where = []
            if status:
                where.append(TradeRow.status == status)
            if symbol:
                where.append(TradeRow.symbol == symbol)
            total = s.scalar(select(func.count()).select_from(TradeRow).where(*where))
            rows = s.scalars(select(TradeRow).where(*where).order_by(TradeRow.id.desc()).offset(offset).limit(limit))
            return total, list(rows)

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

    def mark_closing(self, trade_id: int, reason: str) -> None:
        self._transition(trade_id, (TradeStatus.OPEN,), status=TradeStatus.CLOSING, exit_reason=reason)

    def release_exit(self, trade_id: int) -> None:
        """An exit claimed by a signal was not sent: a later signal may claim it again."""
        self._transition(trade_id, (TradeStatus.OPEN,), exit_reason=None)

    def reopen(self, trade_id: int, note: str) -> None:
        """Its exit order ended unfilled: the trade is open again, so a later exit can be tried."""
        self._transition(trade_id, (TradeStatus.CLOSING,), status=TradeStatus.OPEN, exit_reason=None, reason=note)

    def cancel_trade(self, trade_id: int, reason: str) -> None:
        """An active trade the broker knows nothing of: no outcome, no reward."""
        self._transition(trade_id, ACTIVE_TRADE_STATUSES, status=TradeStatus.CANCELED, reason=reason)

    def _transition(self, trade_id: int, from_statuses: tuple[str, ...], **values) -> None:
        """Move a trade on, only from the given statuses (a late or replayed event changes nothing)."""
        self._update_trade(update(TradeRow).where(TradeRow.id == trade_id, TradeRow.status.in_(from_statuses))
                           .values(**values))

    def _update_trade(self, statement: Update) -> None:
        """One trade's UPDATE. The row it changed, as committed, is written through to the hot state; one that
        changed nothing leaves the hash as it is (a lagging hash costs admission a query, never a wrong answer)."""
        with self._sessions.begin() as s:
            trade = s.scalar(statement.returning(TradeRow))
        if trade is not None and self.hot is not None:
            self.hot.sync(trade.symbol, trade)

    def _changed(self, trade_id: int) -> None:
        """Write the state of a trade's symbol, as committed, through to the hot state."""
        if self.hot is not None:
            with self._sessions() as s:
                symbol = s.scalar(select(TradeRow.symbol).where(TradeRow.id == trade_id))
                active = s.scalar(select(TradeRow).where(TradeRow.symbol == symbol,
                                                         TradeRow.status.in_(ACTIVE_TRADE_STATUSES)))
            self.hot.sync(symbol, active)

    def update_adverse_excursions(self, worst: dict[int, tuple[float, float]]) -> None:
        """Raise each trade's max adverse excursion to the given (worst price, percent on margin); it never
        goes down."""
        if not worst:
            return
        with self._sessions.begin() as s:
            for trade_id, (price, pct) in worst.items():
                s.execute(
                    update(TradeRow)
                    .where(TradeRow.id == trade_id,
                           (TradeRow.max_adverse_pct < pct) | TradeRow.worst_price.is_(None))
                    .values(max_adverse_pct=pct, worst_price=price)
                )

    # --- the learning transaction ------------------------------------------------------------------
    def close_and_learn(
        self,
        trade: TradeRow,
        *,
        exit_price: float,
        exit_reason: str,
        closed_at: datetime,
        commission: float,
        outcome: Outcome,
        reward: Reward,
        learning: Learning | None,
        reported: dict[str, Any] | None = None,
    ) -> bool:
        """Close the trade, record its outcome and add what it teaches to the Q-table, all or nothing.
        `reported`: the entry a bot reported for a decision it traded elsewhere, stored on the trade.

        The outcome's unique trade_id makes this exactly-once: a replayed close returns False and changes
        nothing. Each cell is updated by one INSERT ... ON CONFLICT DO UPDATE evaluated on the row's latest
        version, so concurrent closes serialise on the row locks (taken in one order) and none is lost.
        """
        try:
            with self._sessions.begin() as s:
                s.add(OutcomeRow(
                    trade_id=trade.id,
                    symbol=trade.symbol,
                    policy=trade.policy,
                    state_key=trade.rl_state_key,
                    action_key=trade.rl_action_key,
                    reward_fn=reward.fn,
                    reward=reward.value,
                    exposure=outcome.exposure,
                    trade_return=outcome.trade_return,
                    pnl_usd=outcome.pnl_usd,
                    pnl_pct=outcome.pnl_pct,
                    duration_hours=outcome.duration_hours,
                    max_drawdown_pct=outcome.max_drawdown_pct,
                    won=outcome.won,
                    closed_at=closed_at,
                ))
                s.flush()  # the unique trade_id decides here whether this close is the first
                s.execute(
                    update(TradeRow)
                    .where(TradeRow.id == trade.id)
                    .values(status=TradeStatus.CLOSED, exit_price=exit_price, exit_reason=exit_reason, closed_at=closed_at,
                            pnl_usd=outcome.pnl_usd, commission_usd=TradeRow.commission_usd + commission,
                            max_adverse_pct=outcome.max_drawdown_pct, **(reported or {}))
                )
                if learning is not None:
                    self._add_rewards(s, learning, reward)
            self._read_cache.clear()
            first = True
        except IntegrityError:
            first = False
        self._changed(trade.id)
        return first

    def _add_rewards(self, s: Session, learning: Learning, reward: Reward) -> None:
        now = utcnow()
        w = learning.weight
        rows = [dict(state_key=state, action_key=action, visits=1, weight=w, reward_sum=w * r, reward_sq_sum=w * r * r,
                     updated_at=now, decay=learning.decay) for state, action, r in sorted(learning.rewards)]
        s.execute(self._add_cell, rows)  # one statement, many rows, in key order (row locks taken in one order)
        decayed = AgentRow.epsilon * reward.epsilon_decay
        s.execute(
            update(AgentRow)
            .where(AgentRow.name == AGENT)
            .values(total_updates=AgentRow.total_updates + 1, last_updated_at=now,
                    epsilon=case((decayed < reward.epsilon_min, reward.epsilon_min), else_=decayed))
        )

    def decision_counts(self, horizon_hours: float) -> dict[str, int]:
        """POST /v1/decisions decisions: awaiting their report, reported, and expired unreported."""
        self.flush_decisions()
        cutoff = utcnow() - timedelta(hours=horizon_hours)
        decided = select(SignalRow.signal_id).where(SignalRow.status == "decided")
        waiting = TradeRow.status == TradeStatus.EXTERNAL
        with self._reads() as s:
            row = s.execute(select(func.count().filter(waiting & (TradeRow.created_at >= cutoff)),
                                   func.count().filter(TradeRow.status == TradeStatus.CLOSED),
                                   func.count().filter(waiting & (TradeRow.created_at < cutoff)))
                            .where(TradeRow.signal_id.in_(decided))).one()
        return dict(zip(("awaiting_report", "reported", "expired"), row))

    # --- outcomes -----------------------------------------------------------------------------------
    def recent_win_rate(self, n: int) -> float | None:
        """Win rate of the last n outcomes, None before the first (cached, see _cached)."""
        return self._cached(("win_rate", n), lambda: self._load_win_rate(n))

    def _load_win_rate(self, n: int) -> float | None:
        outcome = OutcomeRow.__table__
        with self.engine.connect() as c:
            won = list(c.scalars(select(outcome.c.won).order_by(outcome.c.id.desc()).limit(n)))
        return sum(won) / len(won) if won else None

    def outcomes(self, offset: int, limit: int, state_key: str | None = None) -> tuple[int, list[OutcomeRow]]:
        with self._sessions() as s:
            where = [OutcomeRow.state_key == state_key] if state_key else []
            total = s.scalar(select(func.count()).select_from(OutcomeRow).where(*where))
            rows = s.scalars(select(OutcomeRow).where(*where).order_by(OutcomeRow.id.desc()).offset(offset).limit(limit))
            return total, list(rows)

    def outcome_of_trade(self, trade_id: int) -> OutcomeRow | None:
        with self._sessions() as s:
            return s.scalar(select(OutcomeRow).where(OutcomeRow.trade_id == trade_id))

    def ab_trades(self) -> list[TradeRow]:
        """Closed trades (sized 0 included) that a live A/B test's arm sized."""
        with self._sessions() as s:
            return list(s.scalars(select(TradeRow).where(TradeRow.arm.is_not(None), TradeRow.status == TradeStatus.CLOSED)))

    def iter_outcomes(self) -> Iterator[OutcomeRow]:
        with self._sessions() as s:
            yield from s.scalars(select(OutcomeRow).order_by(OutcomeRow.id)).all()


def _trade_values(signal: Signal, decision: Decision, client_order_id: str, equity: float, decided_at: datetime,
                  deadline_at: datetime | None, status: str) -> dict[str, Any]:
    return dict(
        signal_id=signal.signal_id, client_order_id=client_order_id, symbol=decision.symbol,
        side=decision.side.value, status=status, shadow=decision.skipped, quantity=decision.quantity,
        size_usd=decision.size_usd, leverage=decision.leverage, stop_price=decision.stop_price,
        target_price=decision.target_price, deadline_at=deadline_at, policy=decision.policy,
        rl_state_key=decision.state_key, rl_action_key=decision.action_key, q_value=decision.q_value,
        model_version=decision.model_version, arm=decision.arm, equity_at_entry=equity, decided_at=decided_at,
        decision_price=decision.price, commission_usd=0.0, max_adverse_pct=0.0, reason="", created_at=utcnow(),
    )


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
                    c.execute(SIGNAL_INSERT, [signal for signal, _ in batch])
                    c.execute(TradeRow.__table__.insert(), [trade for _, trade in batch])
                return
            except OperationalError as exc:
                if time.monotonic() > deadline:
                    log.error("%d decision(s) not written, the database is down (%s); their reports will get 404",
                              len(batch), exc)
                    return
                time.sleep(0.5)


def _signal_values(signal: Signal, decision: Decision, status: str, reason: str) -> dict[str, Any]:
    return dict(signal_id=signal.signal_id, symbol=signal.symbol, side=signal.side.value,
                confidence=signal.confidence, decision=decision.to_json(), status=status, reason=reason,
                received_at=utcnow())


def _signal_row(signal: Signal, decision: Decision, status: str, reason: str) -> SignalRow:
    return SignalRow(**_signal_values(signal, decision, status, reason))
