"""Closed trades' outcomes and rewards, as the API, the CLI and the sizing path read them (they are written
with the trade's close, `SqlTrades.close`)."""
from __future__ import annotations

from typing import Iterator

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import sessionmaker

from backend.store.cache import ReadCache
from backend.store.tables import OutcomeRow


class SqlOutcomes:
    def __init__(self, engine: Engine, cache: ReadCache) -> None:
        self.engine = engine
        self._cache = cache
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def recent_win_rate(self, n: int) -> float | None:
        """Win rate of the last n outcomes, None before the first (cached: the performance bucket of a state)."""
        return self._cache.get(("win_rate", n), lambda: self._load_win_rate(n))

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

    def iter_outcomes(self) -> Iterator[OutcomeRow]:
        with self._sessions() as s:
            yield from s.scalars(select(OutcomeRow).order_by(OutcomeRow.id)).all()
