"""The trading state's row, its change log, and the account history its protections read."""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import sessionmaker

from backend.domain.trade import UNPLACED_TRADE_STATUSES
from backend.store.tables import OWN_TRADE, OutcomeRow, TradeRow, TradingStateChangeRow, TradingStateRow

ROW_ID = 1
CACHE_MAX_AGE_S = 1.0


class TradingStateRepository:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._cached: tuple[float, TradingStateRow] | None = None

    def trading_state(self, fresh: bool = False) -> TradingStateRow:
        """The row (ACTIVE until a first evaluation stores one). Cached: dropped by this process's writes, at
        most CACHE_MAX_AGE_S old when another process writes."""
        now = time.monotonic()
        if not fresh and self._cached is not None and now - self._cached[0] < CACHE_MAX_AGE_S:
            return self._cached[1]
        with self._sessions() as s:
            row = s.get(TradingStateRow, ROW_ID) or TradingStateRow(id=ROW_ID, state="ACTIVE", cause="", reason="",
                                                                    manual_reason="")
        self._cached = (now, row)
        return row

    def save_trading_state(self, at: datetime, state: str, cause: str, reason: str, **kept: Any) -> None:
        """Store an evaluation; a new state or cause is logged. `kept`: the protections' day and peak."""
        with self._sessions.begin() as s:
            row = self._row(s)
            if (row.state, row.cause) != (state, cause):
                s.execute(insert(TradingStateChangeRow).values(at=at, from_state=row.state, to_state=state,
                                                               cause=cause, reason=reason))
                row.changed_at = at
            row.state, row.cause, row.reason = state, cause, reason
            for name, value in kept.items():
                setattr(row, name, value)
        self._cached = None

    def hold_trading_state(self, state: str, reason: str) -> None:
        with self._sessions.begin() as s:
            row = self._row(s)
            row.manual_state, row.manual_reason = state, reason
        self._cached = None

    def reset_trading_state(self, at: datetime, equity: float) -> None:
        """The operator's ACTIVE: no hold, and the peak, the day's start and the losing streak start again."""
        with self._sessions.begin() as s:
            row = self._row(s)
            row.manual_state, row.manual_reason = None, ""
            row.peak_equity = row.day_start_equity = equity
            row.reset_at = at
        self._cached = None

    def trading_state_changes(self, limit: int) -> list[TradingStateChangeRow]:
        with self._sessions() as s:
            return list(s.scalars(select(TradingStateChangeRow).order_by(TradingStateChangeRow.id.desc())
                                  .limit(limit)))

    def own_results(self, since: datetime | None, limit: int) -> tuple[tuple[bool, ...], datetime | None]:
        """Won? of this account's last `limit` closed trades after `since`, oldest first, and the newest's close."""
        query = (select(OutcomeRow.won, OutcomeRow.closed_at).join(TradeRow, TradeRow.id == OutcomeRow.trade_id)
                 .where(*OWN_TRADE).order_by(OutcomeRow.closed_at.desc(), OutcomeRow.id.desc()).limit(limit))
        if since is not None:
            query = query.where(OutcomeRow.closed_at > since)
        with self._sessions() as s:
            rows = s.execute(query).all()
        return tuple(won for won, _ in reversed(rows)), rows[0][1] if rows else None

    def own_trades_since(self, since: datetime) -> int:
        """Orders this account placed for trades decided at or after `since` (market time)."""
        placed = TradeRow.status.notin_(UNPLACED_TRADE_STATUSES)
        with self._sessions() as s:
            return s.scalar(select(func.count()).select_from(TradeRow)
                            .where(*OWN_TRADE, placed, TradeRow.decided_at >= since))

    def _row(self, s) -> TradingStateRow:
        """The row, locked for this transaction (created if missing; concurrent creators do not collide)."""
        s.execute(self._insert(TradingStateRow).values(id=ROW_ID, state="ACTIVE", cause="", reason="",
                                                       manual_reason="").on_conflict_do_nothing())
        return s.get(TradingStateRow, ROW_ID, with_for_update=True, populate_existing=True)
