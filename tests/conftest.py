"""Shared fixtures: settings isolated from any .env, a real PostgreSQL database per test session, the local
Redis."""
from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import date

import pytest
import redis
import sqlalchemy as sa
import uvicorn

from backend.config import Settings
from backend.store.db import run_migrations
from backend.store.tables import Base

os.environ["SIZER_ENV_FILE"] = ""  # a developer's .env (and its BROKER=alpaca) never reaches the tests' processes
# the server's maintenance database, which every PostgreSQL server has: each session creates its own beside it
PG_ADMIN_URL = os.environ.get("SIZER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("SIZER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")  # not the default db 0
REQUIRE_SERVICES = os.environ.get("SIZER_REQUIRE_SERVICES") == "1" or os.environ.get("CI") == "true"


def service_missing(message: str) -> None:
    """Skip the test, or fail it where the services are required (CI)."""
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


def make_settings(**overrides) -> Settings:
    defaults = dict(
        database_url="sqlite://",
        sim_start=date(2008, 1, 2),
        rl_sizing_seed=1,
        sim_bar_seconds=3600.0,
    )
    return Settings(**{**defaults, **overrides})


@contextmanager
def uvicorn_serving(app):
    """An ASGI app (its lifespan included) behind a real uvicorn server on a free port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/sizer.db"


@pytest.fixture(scope="session")
def pg_database() -> str:
    """A fresh PostgreSQL database for this test session, migrated to head, dropped at the end."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"sizer_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        service_missing(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc.orig}")
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    run_migrations(url)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def empty_database(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def pg_url(pg_database) -> str:
    """The session's PostgreSQL database, emptied before the test."""
    empty_database(pg_database)
    return pg_database


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> str:
    """Both databases the service supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/sizer.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The local Redis. It is shared: tests use keys under their own prefix and delete them."""
    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_missing(f"Redis at {REDIS_TEST_URL} is not reachable: {exc}")
    finally:
        client.close()
    return REDIS_TEST_URL
