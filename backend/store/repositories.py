"""The database's repositories, one per aggregate: trades (with their signals, and their close), the Q agent's
table, and the outcomes' reads."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from backend.store.cache import ReadCache
from backend.store.hot import HotTrades
from backend.store.outcomes import SqlOutcomes
from backend.store.qtable import SqlQTable
from backend.store.trades import SqlTrades


@dataclass(frozen=True)
class Store:
    engine: Engine
    trades: SqlTrades
    q_table: SqlQTable
    outcomes: SqlOutcomes

    @classmethod
    def open(cls, engine: Engine, hot: HotTrades | None = None) -> Store:
        """The repositories on `engine`, sharing one read cache: a close drops the Q-table's and the win rate's
        cached reads, an opening the in-flight notional's. `hot`: the trades' hot state in Redis (workers)."""
        cache = ReadCache()
        q_table = SqlQTable(engine, cache)
        return cls(engine, SqlTrades(engine, cache, q_table, hot), q_table, SqlOutcomes(engine, cache))

    def session(self) -> Session:
        """An ORM session on the database, for reads across the aggregates (operations, tests)."""
        return Session(self.engine)

    def close(self) -> None:
        self.trades.flush_decisions()
        self.engine.dispose()
