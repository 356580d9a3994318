"""The OpenAPI says what the routes answer, and they answer what it says. Schemathesis drives every operation
against the service behind uvicorn on SQLite and on PostgreSQL: the documented examples, the schema's boundaries
(coverage) and generated values (fuzzing), valid and invalid, deterministically. No answer may be a 5xx, and every
answer must be documented: its status, its content type and its body's schema."""
from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_schema_conformance, status_code_conformance,
)

from backend.api.app import create_api
from backend.config import Settings
from backend.domain.model import Side, Signal
from tests.conftest import PG_ADMIN_URL, make_settings, uvicorn_serving
from tests.fakes import experienced_cells

KEY = "k3y-for-tests-0123456789"
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


SPEC = create_api(make_settings()).openapi()
schema = schemathesis.openapi.from_dict(SPEC)


def responses(method: str, path: str) -> dict:
    return SPEC["paths"][path][method]["responses"]


def example(path: str) -> dict:
    """The request body example documented for POST `path`."""
    ref = SPEC["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return SPEC["components"]["schemas"][ref.rsplit("/", 1)[1]]["examples"][0]


def test_every_route_documents_the_errors_it_can_answer():
    for path, operations in SPEC["paths"].items():
        for method, operation in operations.items():
            documented = set(operation["responses"])
            if path.startswith("/v1/"):
                assert "401" in documented, (method, path)
            if "requestBody" in operation:
                assert {"413", "422"} <= documented, (method, path)
            if operation.get("parameters"):
                assert "422" in documented, (method, path)
    assert {"404", "409"} <= set(responses("post", "/v1/decisions/{decision_id}/outcome"))
    assert "404" in responses("get", "/v1/signals/{signal_id}")
    assert {"200", "202", "201", "503"} <= set(responses("post", "/v1/signals"))
    assert list(responses("get", "/metrics")["200"]["content"]) == ["text/plain"]
    assert set(responses("get", "/healthz")) == {"200", "503"}


async def test_the_documented_examples_work_on_the_embedded_defaults(sqlite_url):
    """Each request body's example, sent as it stands to the service as shipped (only its database elsewhere)."""
    app = create_api(Settings(database_url=sqlite_url), run_clock=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sizer") as client:
            r = await client.post("/v1/signals", json=example("/v1/signals"))
            assert r.status_code in (200, 201) and r.json()["status"] in ("placed", "skipped"), r.text
            r = await client.post("/v1/decisions", json=example("/v1/decisions"))
            assert r.status_code == 200 and r.json()["decision_id"], r.text
            r = await client.post(f"/v1/decisions/{r.json()['decision_id']}/outcome",
                                  json=example("/v1/decisions/{decision_id}/outcome"))
            assert r.status_code == 200 and r.json()["learned"], r.text
            r = await client.post("/v1/trading-state", json=example("/v1/trading-state"))
            assert r.status_code == 200 and r.json()["state"] == "REDUCING", r.text
            r = await client.post("/v1/clock", json=example("/v1/clock"))
            assert r.status_code == 200 and r.json()["paused"] and r.json()["bars_left"] > 0, r.text


async def test_while_the_database_is_down_every_route_that_documents_503_answers_it(pg_url):
    """/v1/positions asks only the broker: its 503 is an unreachable broker's (tests/e2e/test_alpaca_api.py)."""
    app = create_api(make_settings(database_url=pg_url), run_clock=False)
    name = sa.engine.make_url(pg_url).database
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    answered = {}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sizer") as client:
            with admin.connect() as conn:  # the database refuses connections and drops the open ones
                conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
                conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                             {"n": name})
            try:
                for path, operations in SPEC["paths"].items():
                    for method, operation in operations.items():
                        if "503" in operation["responses"] and path != "/v1/positions":
                            url = path.replace("{signal_id}", "s-1").replace("{decision_id}", "d-1")
                            body = example(path) if method == "post" else None
                            answered[f"{method} {path}"] = (await client.request(method, url, json=body)).status_code
            finally:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
    admin.dispose()
    assert {"get /v1/agent", "get /metrics", "post /v1/decisions", "get /v1/trading-state"} <= set(answered)
    assert set(answered.values()) == {503}, answered


@pytest.fixture
def service(db_url):
    """The service as deployed off loopback (a key) behind uvicorn, with a Q-table, closed trades, their outcomes
    and an open position to read."""
    app = create_api(make_settings(database_url=db_url, sizer_api_key=KEY, host="0.0.0.0"), run_clock=False)
    with uvicorn_serving(app) as base_url:
        service = app.state.service
        service.store.q_table.import_q_table(experienced_cells(service.settings.risk.exposure_menu()), replace=True)
        for n, symbol in enumerate(("SP500", "NASDAQ", "SP500")):
            assert service.executor.handle(Signal(f"seed-{n}", symbol, Side.BUY, 0.8, time_limit_hours=48)).trade_id
            for _ in range(4 if n < 2 else 1):
                service.engine.step()
        assert service.store.outcomes.outcomes(0, 1, None)[0] == 2 and len(service.broker.positions()) == 1
        yield base_url


@schema.parametrize()
# one service per operation and database, kept across its examples: what they write, the next ones read
@settings(max_examples=200, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_every_answer_is_documented_and_none_is_a_server_error(case, service):
    # generous: stepping the market 50 bars on a busy machine takes seconds, and a slow answer is not a wrong one
    case.call_and_validate(base_url=service, headers={"X-API-Key": KEY}, checks=CHECKS, timeout=60)
