"""Where the simulated broker keeps its account and orders, so that a restarted service resumes its market."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import sessionmaker

from backend.domain.trade import utcnow
from backend.store.tables import SimAccountRow, SimOrderRow


@dataclass(frozen=True)
class SimSnapshot:
    bar_at: datetime
    cash: float
    positions: dict[str, dict[str, Any]]
    orders: list[tuple[str, dict[str, Any], dict[str, Any] | None]]  # (client id, ack, pending request), in order


class SimJournal:
    def __init__(self, engine: Engine, fingerprint: str) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self.fingerprint = fingerprint

    def load(self) -> SimSnapshot | None:
        """The saved account, if it was started with the same bars and account (else None: start afresh)."""
        with self._sessions() as s:
            row = s.get(SimAccountRow, 1)
            if row is None or row.fingerprint != self.fingerprint:
                return None
            orders = s.execute(select(SimOrderRow.client_order_id, SimOrderRow.ack, SimOrderRow.pending)
                               .order_by(SimOrderRow.seq)).all()
        return SimSnapshot(row.bar_at, row.cash, row.positions, [tuple(o) for o in orders])

    def save(self, bar_at: datetime, cash: float, positions: dict[str, dict[str, Any]],
             orders: list[tuple[str, int, dict[str, Any], dict[str, Any] | None]]) -> None:
        """The account as it is now and the orders that changed since the last save, in one transaction."""
        with self._sessions.begin() as s:
            account = dict(id=1, fingerprint=self.fingerprint, bar_at=bar_at, cash=cash, positions=positions,
                           saved_at=utcnow())
            upsert = self._insert(SimAccountRow).values(account)
            s.execute(upsert.on_conflict_do_update(index_elements=["id"], set_={k: upsert.excluded[k] for k in account
                                                                                if k != "id"}))
            for cid, seq, ack, pending in orders:
                row = self._insert(SimOrderRow).values(client_order_id=cid, seq=seq, ack=ack, pending=pending)
                s.execute(row.on_conflict_do_update(index_elements=["client_order_id"],
                                                    set_=dict(ack=row.excluded.ack, pending=row.excluded.pending)))

    def clear(self) -> None:
        with self._sessions.begin() as s:
            s.execute(delete(SimOrderRow))
            s.execute(delete(SimAccountRow))
