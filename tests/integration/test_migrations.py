"""Upgrading a database the previous version wrote: its size_mult|leverage Q-values land on the exposure menu."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from backend.store.db import PROJECT_ROOT, make_engine, run_migrations
from backend.store.repositories import Store
from backend.store.tables import OutcomeRow, SignalRow, TradeRow
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


def alembic(url: str) -> Config:
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    cfg.attributes["database_url"] = url
    return cfg


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

    command.downgrade(alembic(fresh_url), "0001")  # and back down: the old schema, its exposure cells dropped
    engine = make_engine(fresh_url)
    with engine.connect() as c:
        assert c.scalar(sa.text("SELECT count(*) FROM q_value")) == 0
        assert c.scalar(sa.text("SELECT alpha FROM agent")) == 0.15
    engine.dispose()


def test_outcomes_learned_under_the_reward_named_seed_are_renamed_shaped_pnl(fresh_url):
    run_migrations(fresh_url)
    engine = make_engine(fresh_url)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with engine.begin() as c:
        c.execute(sa.insert(SignalRow.__table__).values(signal_id="s1", symbol="SPY", side="buy", confidence=0.8,
                                                        decision={}, status="placed"))
        trade = c.execute(sa.insert(TradeRow.__table__).values(
            signal_id="s1", client_order_id="c1", symbol="SPY", side="buy", status="closed", quantity=1.0,
            size_usd=100.0, leverage=1.0, stop_price=95.0, policy="qlearning", equity_at_entry=1e4))
        c.execute(sa.insert(OutcomeRow.__table__).values(
            trade_id=trade.inserted_primary_key[0], symbol="SPY", policy="qlearning", reward_fn="shaped_pnl",
            reward=1.0, pnl_usd=1.0, pnl_pct=1.0, duration_hours=1.0, max_drawdown_pct=0.0, won=True, closed_at=t0))

    def reward_fn() -> str:
        with engine.connect() as c:
            return c.scalar(sa.text("SELECT reward_fn FROM outcome"))

    command.downgrade(alembic(fresh_url), "0006")
    assert reward_fn() == "seed"  # as the version before wrote it
    run_migrations(fresh_url)
    assert reward_fn() == "shaped_pnl"
    engine.dispose()
