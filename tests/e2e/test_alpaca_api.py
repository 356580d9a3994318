"""The HTTP API on BROKER=alpaca (the fake Alpaca server): signals go out through alpaca-py, the
reconciliation report is served, an unreachable broker answers 503, and no key ever comes back."""
from __future__ import annotations

import httpx
import pytest

from backend.api.app import create_api
from backend.execution.executor import client_order_id
from tests.conftest import make_settings
from tests.fake_alpaca import FakeAlpaca
from tests.integration.test_alpaca import wait_for


@pytest.fixture
async def api(sqlite_url):
    fake = FakeAlpaca().start()
    fake.positions["SPY"] = (3.0, 90.0)  # held before sizer started: reported, left alone
    app = create_api(make_settings(database_url=sqlite_url, sizing_policy="fixed", **fake.settings()), run_clock=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sizer") as client:
            client.fake = fake
            yield client
    fake.stop()


async def test_trading_through_the_api(api):
    r = await api.get("/v1/reconciliation")
    assert r.status_code == 200 and r.json()["broker"] == "alpaca" and not r.json()["clean"]
    assert any("SPY" in d and "not a sizer trade" in d for d in r.json()["differences"])

    r = await api.post("/v1/signals", json={"signal_id": "api-a1", "symbol": "btc/usd", "side": "buy",
                                            "confidence": 0.7, "stop_price": 95})
    assert r.status_code == 201, r.text
    assert r.json()["decision"]["leverage"] == 1.0
    api.fake.fill(client_order_id("api-a1"), price=100.0)
    wait_for(lambda: api.fake.positions.get("BTC/USD"), what="the fill")
    r = await api.get("/v1/positions")
    assert any(p["symbol"] == "BTC/USD" for p in r.json()["positions"])

    r = await api.get("/healthz")
    assert r.status_code == 200 and r.json()["checks"]["broker"] == "ok (alpaca paper, market open)"
    api.fake.fail_next("GET", "/v2/positions", 503, times=10)  # the account is cached for a while; positions are not
    r = await api.get("/v1/positions")
    assert r.status_code == 503 and "alpaca positions failed" in r.json()["detail"]
    api.fake.fail_next("GET", "/v2/clock", 500)
    r = await api.get("/healthz")
    assert r.status_code == 503 and r.json()["status"] == "degraded" and "500" in r.json()["checks"]["broker"]

    for path in ("/v1/positions", "/v1/trades", "/v1/reconciliation", "/healthz", "/openapi.json"):
        assert "secret-test" not in (await api.get(path)).text
