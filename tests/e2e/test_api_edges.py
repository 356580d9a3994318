"""Bad input at the edges of the HTTP API is answered 4xx, never 5xx, on both databases: bodies over the limit
however they are sent, numbers past what the databases store, control characters in path and query values."""
from __future__ import annotations

import json
import math

import httpx
import pytest

from backend.api.app import create_api
from tests.conftest import make_settings, uvicorn_serving

SIGNAL = b'{"signal_id": "chunked-1", "symbol": "SP500", "side": "buy", "confidence": 0.8}'


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    settings = make_settings(database_url=f"sqlite:///{tmp_path_factory.mktemp('edges')}/s.db")
    with uvicorn_serving(create_api(settings, run_clock=False)) as base:
        yield base


def test_a_chunked_body_over_the_limit_is_413(served):
    ten_mib = (b" " * 65_536 for _ in range(160))  # a generator: sent chunked, with no Content-Length
    r = httpx.post(f"{served}/v1/signals", content=ten_mib, headers={"content-type": "application/json"}, timeout=60)
    assert r.request.headers["transfer-encoding"] == "chunked" and "content-length" not in r.request.headers
    assert r.status_code == 413, r.text
    assert r.json() == {"detail": "request body larger than 64000 bytes"}
    assert httpx.get(f"{served}/v1/trades").json()["total"] == 0


def test_a_declared_length_over_the_limit_is_413(served):
    r = httpx.post(f"{served}/v1/signals", content=b" " * 64_001, headers={"content-type": "application/json"})
    assert r.request.headers["content-length"] == "64001"
    assert r.status_code == 413 and r.json() == {"detail": "request body larger than 64000 bytes"}


def test_a_chunked_body_within_the_limit_is_read_whole(served):
    pieces = (SIGNAL[i:i + 7] for i in range(0, len(SIGNAL), 7))
    r = httpx.post(f"{served}/v1/signals", content=pieces, headers={"content-type": "application/json"})
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code in (200, 201) and r.json()["signal_id"] == "chunked-1", r.text
    assert httpx.get(f"{served}/v1/signals/chunked-1").status_code == 200


@pytest.fixture
async def api(db_url):
    app = create_api(make_settings(database_url=db_url), run_clock=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sizer") as client:
            yield client


@pytest.mark.parametrize("min_visits", ["9223372036854775808", "2147483648", "-1", "1e3"])
async def test_min_visits_past_what_the_databases_store_is_422(api, min_visits):
    r = await api.get("/v1/qtable/top", params={"min_visits": min_visits})
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["detail"]] == [["query", "min_visits"]]


async def test_the_largest_min_visits_is_answered(api):
    r = await api.get("/v1/qtable/top", params={"min_visits": 2**31 - 1})
    assert r.status_code == 200 and r.json() == []


NUL = "a\x00b"


@pytest.mark.parametrize("method, path, params, loc", [
    ("GET", "/v1/trades", {"symbol": NUL}, ["query", "symbol"]),
    ("GET", "/v1/qtable", {"state": NUL}, ["query", "state"]),
    ("GET", "/v1/outcomes", {"state": NUL}, ["query", "state"]),
    ("GET", "/v1/signals/a%00b", {}, ["path", "signal_id"]),
    ("GET", "/v1/signals/a%1Fb", {}, ["path", "signal_id"]),
    ("GET", "/v1/signals/" + "x" * 129, {}, ["path", "signal_id"]),
    ("POST", "/v1/decisions/dec-%00/outcome", {}, ["path", "decision_id"]),
])
async def test_control_characters_in_path_and_query_values_are_422_naming_them(api, method, path, params, loc):
    body = {"entry_price": 100, "exit_price": 101, "quantity": 1, "worst_price": 99,
            "opened_at": "2008-01-02T00:00:00Z", "closed_at": "2008-01-03T00:00:00Z"} if method == "POST" else None
    r = await api.request(method, path, params=params, json=body)
    assert r.status_code == 422, r.text
    assert loc in [e["loc"] for e in r.json()["detail"]]


async def test_the_symbol_filter_takes_any_case(api):
    assert (await api.post("/v1/signals", json=json.loads(SIGNAL))).status_code in (200, 201)
    for symbol in ("sp500", "SP500"):
        r = await api.get("/v1/trades", params={"symbol": symbol})
        assert r.status_code == 200 and r.json()["total"] == 1, r.text


@pytest.mark.parametrize("body", [b"\xff\xfe{", b'{"symbol": "\xe9"}', b"\x0c\xa0"])
async def test_a_body_that_is_not_utf8_is_422_like_any_malformed_json(api, body):
    r = await api.post("/v1/decisions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body"] and r.json()["detail"][0]["type"] == "json_invalid"


REPORT = {"entry_price": 100, "exit_price": 101, "quantity": 1, "worst_price": 99,
          "opened_at": "2008-01-02T00:00:00Z", "closed_at": "2008-01-03T00:00:00Z"}


@pytest.mark.parametrize("change, field", [
    ({"opened_at": "0001-01-01T00:00:00+01:00"}, "opened_at"),  # before year 1 in UTC
    ({"closed_at": "9999-12-31T23:00:00-05:00"}, "closed_at"),  # after year 9999 in UTC
    ({"quantity": 5e-324, "entry_price": 5e-324, "exit_price": 5e-324, "worst_price": 5e-324}, "quantity"),
    ({"entry_price": 1e-300, "worst_price": 1e-300, "exit_price": 1e9}, "entry_price"),  # inf / inf: a NaN reward
    ({"quantity": 1e-300, "commission": 1e12}, "quantity"),  # costs of inf x the notional: a NaN return
])
async def test_a_report_the_arithmetic_cannot_hold_is_422_and_teaches_nothing(api, change, field):
    decision = (await api.post("/v1/decisions", json={"symbol": "SP500", "side": "buy", "confidence": 0.8})).json()
    r = await api.post(f"/v1/decisions/{decision['decision_id']}/outcome", json={**REPORT, **change})
    assert r.status_code == 422, r.text
    assert ["body", field] in [e["loc"] for e in r.json()["detail"]]
    assert (await api.get("/v1/outcomes")).json()["total"] == 0


async def test_the_extremes_a_report_may_hold_teach_finite_numbers(api):
    decision = (await api.post("/v1/decisions", json={"symbol": "SP500", "side": "buy", "confidence": 0.8})).json()
    extreme = {"entry_price": 1e-8, "worst_price": 1e-8, "exit_price": 1e9, "quantity": 1e-12, "commission": 1e12,
               "opened_at": "0001-01-01T00:00:00Z", "closed_at": "9999-12-31T23:59:59Z"}
    r = await api.post(f"/v1/decisions/{decision['decision_id']}/outcome", json=extreme)
    assert r.status_code == 200, r.text
    assert all(math.isfinite(r.json()[k]) for k in ("exposure", "trade_return", "reward")), r.json()
    assert (await api.get("/v1/qtable", params={"limit": 500})).status_code == 200  # no NaN learned
