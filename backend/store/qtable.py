"""The Q agent's aggregate: its row (exploration) and the Q-table's cells."""
from __future__ import annotations

from typing import Sequence

from sqlalchemy import Connection, Engine, bindparam, case, func, select, update
from sqlalchemy.orm import sessionmaker

from backend.domain.trade import utcnow
from backend.sizing.qlearning import Cell, Learning
from backend.store.cache import ReadCache
from backend.store.db import dialect_insert
from backend.store.tables import AgentRow, QValueRow

AGENT = "qlearning"


class SqlQTable:
    """The QTable port of the Q-learning policy, and the Q-table's reads and imports for the API and the CLI."""

    def __init__(self, engine: Engine, cache: ReadCache) -> None:
        self.engine = engine
        self._cache = cache
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._insert = dialect_insert(engine)
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

    def q_cells(self, state_keys: Sequence[str]) -> tuple[dict[str, dict[str, Cell]], float]:
        """The cells of these states {state: {action: cell}} and the current epsilon, in one query (cached)."""
        keys = tuple(state_keys)
        return self._cache.get(("q", keys), lambda: self._load_cells(keys))

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
        self._cache.clear()
        return len(cells)

    def learn(self, c: Connection, learning: Learning) -> None:
        """Add what a closed trade teaches, in the caller's transaction (the one recording its outcome). Each cell
        is updated by one INSERT ... ON CONFLICT DO UPDATE evaluated on the row's latest version, in key order,
        so concurrent closes serialise on the row locks (taken in one order) and none is lost."""
        now = utcnow()
        w = learning.weight
        rows = [dict(state_key=state, action_key=action, visits=1, weight=w, reward_sum=w * r, reward_sq_sum=w * r * r,
                     updated_at=now, decay=learning.decay) for state, action, r in sorted(learning.rewards)]
        c.execute(self._add_cell, rows)
        decayed = AgentRow.epsilon * learning.epsilon_decay
        c.execute(
            update(AgentRow)
            .where(AgentRow.name == AGENT)
            .values(total_updates=AgentRow.total_updates + 1, last_updated_at=now,
                    epsilon=case((decayed < learning.epsilon_min, learning.epsilon_min), else_=decayed))
        )
