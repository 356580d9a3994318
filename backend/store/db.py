"""Engine and migrations. SQLite (embedded default) and PostgreSQL behave the same to the callers."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

PROJECT_ROOT = Path(__file__).resolve().parents[2]
POOL_SIZE = 32  # above WORKER_CONCURRENCY's most (24) and the background threads: no connection is opened per use


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # WAL lets readers and the one writer work side by side
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_size=POOL_SIZE, max_overflow=16, pool_pre_ping=True)


@lru_cache(maxsize=4)
def probe_engine(url: str) -> Engine:
    """A one-connection engine for health probes, apart from the service's pool (which writers waiting for a
    lock may hold): it fails fast instead of queueing behind them."""
    if make_url(url).get_backend_name() == "sqlite":
        return create_engine(url, poolclass=NullPool, connect_args={"check_same_thread": False, "timeout": 0.5})
    return create_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.5, pool_pre_ping=True,
                         connect_args={"connect_timeout": 2})


def run_migrations(url: str, revision: str = "head") -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    cfg.attributes["database_url"] = url
    command.upgrade(cfg, revision)


def dialect_insert(engine: Engine):
    """The dialect's INSERT, which has ON CONFLICT (SQLite and PostgreSQL spell it the same)."""
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
