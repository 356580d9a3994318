"""Upgrading a database the previous version wrote: its size_mult|leverage Q-values land on the exposure menu."""
from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from backend.store.db import PROJECT_ROOT, make_engine, run_migrations
from backend.store.repositories import Store
from tests.conftest import PG_ADMIN_URL, service_missing


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request, tmp_path):
    """An empty database of each kind (not migrated)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/old.db"
        return
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"sizer_migration_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        service_missing(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc.orig}")
    yield sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_old_q_values_are_carried_onto_the_menu(fresh_url):
    run_migrations(fresh_url, "0001")
    engine = make_engine(fresh_url)
    state = "low_vol_trending|high|light|good"
    with engine.begin() as c:
        c.execute(sa.text("INSERT INTO agent (name, alpha, epsilon_initial, epsilon, total_updates) "
                          "VALUES ('qlearning', 0.15, 0.1, 0.05, 7)"))
        for action, q, visits in (("1.0|3.0", 0.5, 3), ("1.5|2.0", -0.1, 1), ("0.3|1.0", 0.2, 0), ("1.0|1.0", 0.7, 2)):
            c.execute(sa.text("INSERT INTO q_value (state_key, action_key, q, visits, updated_at) "
                              "VALUES (:s, :a, :q, :n, '2026-01-01 00:00:00')"), dict(s=state, a=action, q=q, n=visits))
    engine.dispose()

    run_migrations(fresh_url)
    store = Store.open(make_engine(fresh_url))
    cells = {c.action_key: c for c in store.q_table.q_values(state, 0, 100)[1]}
    assert set(cells) == {"0.8", "0.25"}  # 0.75 and 0.75 -> 0.8, 0.25; an action never visited is left out
    assert (cells["0.8"].visits, cells["0.8"].weight) == (4, 4.0)
    assert cells["0.8"].reward_sum == pytest.approx(3 * 0.5 - 0.1)
    assert cells["0.8"].reward_sq_sum == pytest.approx(3 * 0.25 + 0.01)
    assert cells["0.25"].q == pytest.approx(0.7)
    agent = store.q_table.agent()
    assert (agent.epsilon, agent.total_updates) == (0.05, 7)
    store.engine.dispose()

    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))  # and back down: the old schema, its exposure cells dropped
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    cfg.attributes["database_url"] = fresh_url
    command.downgrade(cfg, "0001")
    engine = make_engine(fresh_url)
    with engine.connect() as c:
        assert c.scalar(sa.text("SELECT count(*) FROM q_value")) == 0
        assert c.scalar(sa.text("SELECT alpha FROM agent")) == 0.15
    engine.dispose()
