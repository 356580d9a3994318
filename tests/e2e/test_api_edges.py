"""Bad input at the edges of the HTTP API is answered 4xx, never 5xx, on both databases: bodies over the limit
however they are sent, numbers past what the databases store, control characters in path and query values."""
from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from backend.api.app import create_app
from tests.conftest import make_settings

SIGNAL = b'{"signal_id": "chunked-1", "symbol": "SP500", "side": "buy", "confidence": 0.8}'


@contextmanager
def uvicorn_serving(settings):
    """The service behind a real uvicorn server on a free port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings, run_clock=False), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with uvicorn_serving(make_settings(database_url=f"sqlite:///{tmp_path_factory.mktemp('edges')}/s.db")) as base:
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
    app = create_app(make_settings(database_url=db_url), run_clock=False)
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
