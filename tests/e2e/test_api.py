"""The HTTP API through httpx, with the service's real lifespan, store and simulated broker."""
from __future__ import annotations

import json
import math

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import func, select

from backend.api.app import create_api
from backend.store.tables import OutcomeRow, SignalRow, TradeRow
from tests.conftest import PG_ADMIN_URL, make_settings
from tests.fakes import experienced_cells

SIGNAL = {"signal_id": "api-1", "symbol": "SP500", "side": "buy", "confidence": 0.8}


@pytest.fixture
async def api(sqlite_url):
    """The Q agent with experience: a Q-table whose trades so far show a clear edge, so it sizes."""
    app = create_api(make_settings(database_url=sqlite_url), run_clock=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sizer") as client:
            client.service = app.state.service
            menu = client.service.settings.risk.exposure_menu()
            client.service.store.q_table.import_q_table(experienced_cells(menu), replace=True)
            yield client


def rows(client, table) -> int:
    with client.service.store.session() as s:
        return s.scalar(select(func.count()).select_from(table))


def nothing_written(client) -> bool:
    return rows(client, SignalRow) == 0 and rows(client, TradeRow) == 0 and client.service.broker.positions() == []


async def test_decision_sizes_without_placing_anything(api):
    r = await api.post("/v1/decisions", json={"symbol": "sp500", "side": "BUY", "confidence": 0.9})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["approved"] and d["policy"] == "qlearning" and d["symbol"] == "SP500"
    assert d["size_usd"] > 0 and d["quantity"] == pytest.approx(d["size_usd"] / d["price"])
    assert d["exposure"] == pytest.approx(d["size_usd"] / 100_000) and d["exposure"] >= 1  # a clear edge
    assert d["leverage"] == pytest.approx(d["exposure"]) and d["leverage"] <= 3  # RM_MAX_EXPOSURE
    assert d["state_key"].count("|") == 3 and d["action_key"] and d["reasoning"]
    assert d["stop_price"] < d["price"]
    # nothing placed and no symbol held: the decision is kept only to learn from its reported outcome
    api.service.store.trades.flush_decisions()
    trade = api.service.store.trades.trade_for_signal(d["decision_id"])
    assert trade.status == "external" and api.service.store.trades.active_trade("SP500") is None
    assert api.service.broker.positions() == [] and rows(api, TradeRow) == 1


def _raw(body: dict) -> str:
    return json.dumps(body, allow_nan=True)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"price": float("nan")}, "price"),
        ({"price": float("inf")}, "price"),
        ({"price": 0}, "price"),
        ({"price": -5}, "price"),
        ({"stop_price": float("-inf")}, "stop_price"),
        ({"side": "hold"}, "side"),
        ({"confidence": 1.5}, "confidence"),
        ({"confidence": -0.01}, "confidence"),
        ({"confidence": float("nan")}, "confidence"),
        ({"confidence": None}, "confidence"),
        ({"symbol": None}, "symbol"),
        ({"symbol": "DROP TABLE"}, "symbol"),
        ({"signal_id": "x" * 5000}, "signal_id"),
        ({"signal_id": ""}, "signal_id"),
        ({"stop": 95.0}, "stop"),  # a misspelt field is an error, not silently ignored
        ({"time_limit_hours": 0}, "time_limit_hours"),
        ({"symbol": "TSLA"}, "symbol"),  # well-formed but not tradable here
        ({"stop_price": 1e6}, "stop_price"),  # a buy's stop above the price
        ({"side": "sell", "target_price": 1e6}, "target_price"),
        ({"price": 150.0, "stop_price": 148.5}, "price"),  # far from the market (SP500 at about 1,400 then)
        ({"price": 1e-323, "stop_price": 5e-324}, "price"),  # schema-valid, absurd
    ],
)
async def test_bad_input_is_422_naming_the_field_and_writes_nothing(api, change, field):
    body = {k: v for k, v in {**SIGNAL, **change}.items() if v is not None}
    r = await api.post("/v1/signals", content=_raw(body), headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert any(field in err["loc"] for err in r.json()["detail"]), r.json()
    assert nothing_written(api)


async def test_missing_fields_and_huge_bodies(api):
    r = await api.post("/v1/signals", json={"symbol": "SP500"})
    assert r.status_code == 422
    missing = {err["loc"][-1] for err in r.json()["detail"]}
    assert missing == {"signal_id", "side", "confidence"}
    r = await api.post("/v1/signals", content=b"{" + b" " * 200_000 + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = await api.post("/v1/signals", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert nothing_written(api)


async def test_signal_trade_outcome_and_learning_through_the_api(api):
    r = await api.post("/v1/signals", json={**SIGNAL, "time_limit_hours": 48})
    assert r.status_code == 201, r.text
    placed = r.json()
    assert placed["status"] == "placed" and not placed["replayed"]
    replay = await api.post("/v1/signals", json={**SIGNAL, "time_limit_hours": 48})
    assert replay.status_code == 200 and replay.json()["replayed"] and replay.json()["trade_id"] == placed["trade_id"]

    trades = (await api.get("/v1/trades")).json()
    assert trades["total"] == 1
    trade = trades["items"][0]
    assert trade["rl_state_key"] == placed["decision"]["state_key"]
    assert trade["rl_action_key"] == placed["decision"]["action_key"]
    assert trade["reasoning"] == placed["decision"]["reasoning"] != ""

    api.service.engine.step()
    positions = (await api.get("/v1/positions")).json()
    assert [p["symbol"] for p in positions["positions"]] == ["SP500"]
    assert positions["account"]["exposure"] > 0
    for _ in range(5):
        api.service.engine.step()
    assert (await api.get("/v1/trades", params={"status": "closed"})).json()["total"] == 1

    outcomes = (await api.get("/v1/outcomes")).json()
    outcome = outcomes["items"][0]
    assert outcomes["total"] == 1 and outcome["state_key"] == trade["rl_state_key"]
    assert outcome["exposure"] == pytest.approx(placed["decision"]["exposure"], rel=0.05)  # filled at the next open
    q = (await api.get("/v1/qtable", params={"state": trade["rl_state_key"]})).json()
    menu = api.service.settings.risk.exposure_menu()
    assert q["total"] == len(menu) and {c["visits"] for c in q["items"]} == {1}
    cells = {c["action_key"]: c["q"] for c in q["items"]}  # what every exposure would have earned on its path
    chosen = float(placed["decision"]["action_key"])
    assert cells["0"] == 0 and cells[placed["decision"]["action_key"]] == pytest.approx(
        100 * math.log(1 + chosen * outcome["trade_return"]))
    pooled = (await api.get("/v1/qtable", params={"state": "*|*|*|*"})).json()
    assert {c["visits"] for c in pooled["items"]} == {2001}  # the experience it started with, and this trade
    top = (await api.get("/v1/qtable/top")).json()
    assert top[0]["state_key"] == trade["rl_state_key"]
    agent = (await api.get("/v1/agent")).json()
    assert agent["total_updates"] == 1 and agent["visited_cells"] == len(menu) and agent["states"] == 300
    assert agent["menu"] == list(menu) and agent["actions"] == len(menu)
    assert agent["recent_win_rate"] in (0.0, 1.0)
    assert agent["serving"]["policy"] == "qlearning" and "lower confidence bound" in agent["serving"]["summary"]
    assert rows(api, OutcomeRow) == 1


async def test_queries_validate_their_parameters(api):
    assert (await api.get("/v1/qtable", params={"state": "calm|x|y|z"})).status_code == 422
    assert (await api.get("/v1/qtable", params={"limit": 0})).status_code == 422
    assert (await api.get("/v1/outcomes", params={"offset": -1})).status_code == 422
    assert (await api.get("/v1/trades", params={"status": "lost"})).status_code == 422


async def test_health_metrics_and_openapi(api):
    health = await api.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    await api.post("/v1/decisions", json={"symbol": "NASDAQ", "side": "sell", "confidence": 0.5})
    metrics = (await api.get("/metrics")).text
    assert 'sizer_decisions_total{approved="true",policy="qlearning"} 1.0' in metrics
    assert "sizer_account_equity_usd 100000.0" in metrics
    spec = (await api.get("/openapi.json")).json()
    assert {"/v1/signals", "/v1/decisions", "/v1/qtable", "/v1/qtable/top", "/v1/agent", "/v1/outcomes",
            "/v1/trades", "/v1/positions", "/healthz", "/metrics"} <= set(spec["paths"])


async def test_a_database_outage_answers_503_and_the_service_recovers(pg_url):
    app = create_api(make_settings(database_url=pg_url, sizing_policy="atr"), run_clock=False)
    name = sa.engine.make_url(pg_url).database
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sizer") as client:
            with admin.connect() as conn:  # the database refuses connections and drops the open ones
                conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
                conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = :name"), {"name": name})
            try:
                r = await client.post("/v1/signals", json={**SIGNAL, "signal_id": "db-down"})
                assert r.status_code == 503 and r.json()["detail"].startswith("database unavailable: ")
                assert (await client.get("/healthz")).json()["checks"]["database"].startswith("down")
            finally:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            r = await client.post("/v1/signals", json={**SIGNAL, "signal_id": "db-back"})
            assert r.status_code == 201, r.text
    admin.dispose()


async def test_a_decision_is_sized_on_the_market_price_not_the_callers(api):
    market = (await api.post("/v1/decisions", json={"symbol": "SP500", "side": "buy", "confidence": 0.9})).json()
    near = await api.post("/v1/decisions", json={"symbol": "SP500", "side": "buy", "confidence": 0.9,
                                                 "price": market["price"] * 1.03})
    assert near.status_code == 200, near.text
    assert near.json()["price"] == market["price"] and near.json()["size_usd"] == pytest.approx(market["size_usd"])
    for price, stop, why in ((150.0, 148.5, "market price"), (1e-323, 5e-324, "greater than or equal to 0.000")):
        r = await api.post("/v1/decisions", json={"symbol": "SP500", "side": "buy", "confidence": 0.9,
                                                  "price": price, "stop_price": stop})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "price", r.text
        assert why in r.json()["detail"][0]["msg"]


async def test_a_wiped_out_account_is_reported_not_a_server_error(api):
    from backend.domain.model import Account
    from tests.fakes import StaticBroker, random_walk

    api.service.broker = StaticBroker(Account(equity=-500.0, cash=-500.0, buying_power=0.0, multiplier=1.0,
                                              shorting_enabled=False, gross_position_value=0.0), random_walk(300))
    r = await api.get("/v1/positions")
    assert r.status_code == 200 and r.json()["account"]["equity"] == -500.0
    assert r.json()["account"]["exposure"] is None  # gross / equity has no meaning (JSON has no infinity)
