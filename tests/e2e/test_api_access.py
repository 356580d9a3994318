"""Who may call what (SIZER_API_KEY) and what /healthz reports about each dependency."""
from __future__ import annotations

from contextlib import asynccontextmanager

import httpx
import pytest

from backend.api.app import create_api
from backend.config import ConfigError, load_settings
from tests.conftest import make_settings
from tests.e2e.test_cli import sizer

KEY = "k3y-for-tests-0123456789"
SIGNAL = {"signal_id": "key-1", "symbol": "SP500", "side": "buy", "confidence": 0.8}
DECISION = {"symbol": "SP500", "side": "buy", "confidence": 0.8}


@asynccontextmanager
async def serving(**overrides):
    app = create_api(make_settings(sizing_policy="fixed", **overrides), run_clock=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sizer") as client:
            yield client


@pytest.fixture
async def keyed(sqlite_url):
    async with serving(database_url=sqlite_url, sizer_api_key=KEY, host="0.0.0.0") as client:
        yield client


@pytest.mark.parametrize("headers, detail", [({}, "missing X-API-Key header"),
                                             ({"X-API-Key": "wrong-key-0123456789"}, "does not match"),
                                             ({"X-API-Key": KEY[:-1]}, "does not match"),
                                             ({"X-API-Key": "ключ".encode()}, "does not match")])
async def test_trading_and_sizing_need_the_key(keyed, headers, detail):
    for path, body in (("/v1/signals", SIGNAL), ("/v1/decisions", DECISION)):
        r = await keyed.post(path, json=body, headers=headers)
        assert r.status_code == 401, r.text
        assert detail in r.json()["detail"] and KEY not in r.text
    assert (await keyed.get("/v1/trades", headers={"X-API-Key": KEY})).json()["total"] == 0


def operations(spec: dict) -> list[tuple[str, str]]:
    """Every (method, path) the API serves under /v1, path parameters filled in."""
    return [(method.upper(), path.replace("{signal_id}", "key-1").replace("{decision_id}", "dec-1"))
            for path, ops in spec["paths"].items() if path.startswith("/v1/") for method in ops]


async def test_every_v1_route_needs_the_key_reads_included(keyed):
    spec = (await keyed.get("/openapi.json")).json()
    served = operations(spec)
    assert ("GET", "/v1/positions") in served and ("POST", "/v1/decisions/dec-1/outcome") in served
    for method, path in served:
        r = await keyed.request(method, path)
        assert r.status_code == 401, (method, path, r.text)
        assert r.json()["detail"] == f"missing X-API-Key header: {method} {path} needs the service's SIZER_API_KEY"
        assert r.headers["www-authenticate"] == "APIKey"
        assert spec["paths"][path.replace("key-1", "{signal_id}").replace("dec-1", "{decision_id}")][
            method.lower()]["security"] == [{"APIKeyHeader": []}]
    for path in ("/healthz", "/metrics"):
        assert (await keyed.get(path)).status_code == 200
        assert "security" not in spec["paths"][path]["get"]


async def test_the_key_opens_them(keyed):
    r = await keyed.post("/v1/signals", json=SIGNAL, headers={"X-API-Key": KEY})
    assert r.status_code == 201, r.text
    r = await keyed.post("/v1/decisions", json=DECISION, headers={"X-API-Key": KEY})
    assert r.status_code == 200, r.text
    for path in ("/v1/trades", "/v1/positions", "/v1/qtable", "/v1/qtable/top", "/v1/agent", "/v1/outcomes",
                 "/v1/reconciliation", "/v1/signals/key-1", "/healthz", "/metrics"):
        r = await keyed.get(path, headers={"X-API-Key": KEY})
        assert r.status_code == 200, (path, r.text)
        assert KEY not in r.text
    spec = (await keyed.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"


async def test_open_reads_answer_reads_without_the_key_and_nothing_else(sqlite_url):
    async with serving(database_url=sqlite_url, sizer_api_key=KEY, host="0.0.0.0", sizer_open_reads=True) as client:
        for method, path in operations((await client.get("/openapi.json")).json()):
            r = await client.request(method, path, json=DECISION)
            assert r.status_code == (401 if method != "GET" else 404 if "key-1" in path else 200), (path, r.text)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::"])
def test_a_non_loopback_host_without_a_key_is_refused(host):
    with pytest.raises(ConfigError, match="SIZER_API_KEY must be set when HOST"):
        load_settings(_env_file=None, host=host)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_may_run_without_a_key(host):
    assert load_settings(_env_file=None, host=host).service.api_key is None


def test_a_short_key_is_refused_and_never_echoed(monkeypatch):
    monkeypatch.setenv("SIZER_API_KEY", "short-secret")
    with pytest.raises(ConfigError, match="SIZER_API_KEY") as exc:
        load_settings(_env_file=None)
    assert "short-secret" not in str(exc.value)


def test_a_model_level_error_does_not_echo_the_key(monkeypatch):
    monkeypatch.setenv("SIZER_API_KEY", KEY)
    with pytest.raises(ConfigError, match="RM_MIN_POSITION_USD") as exc:
        load_settings(_env_file=None, rm_min_position_usd=500, rm_max_position_usd=100)
    assert KEY not in str(exc.value)


def test_serve_refuses_to_listen_on_all_interfaces_without_a_key(sqlite_url):
    r = sizer("serve", "--host", "0.0.0.0", env={"DATABASE_URL": sqlite_url, "SIZER_API_KEY": ""}, timeout=60)
    assert r.returncode == 2 and "SIZER_API_KEY must be set when HOST is '0.0.0.0'" in r.stderr, r.stderr


async def test_health_names_a_redis_that_is_down(sqlite_url):
    async with serving(database_url=sqlite_url, redis_url="redis://127.0.0.1:1/0") as client:
        r = await client.get("/healthz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "degraded" and body["checks"]["redis"].startswith("down: ConnectionError")
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"].startswith("ok")


async def test_health_pings_a_live_redis(sqlite_url, redis_url):
    async with serving(database_url=sqlite_url, redis_url=redis_url) as client:
        r = await client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "checks": {
        "database": "ok", "broker": r.json()["checks"]["broker"], "redis": "ok"},
        "trading_state": {"state": "ACTIVE", "cause": "", "reason": ""}}


async def test_health_without_redis_does_not_report_it(sqlite_url):
    async with serving(database_url=sqlite_url) as client:
        r = await client.get("/healthz")
    assert r.status_code == 200 and set(r.json()["checks"]) == {"database", "broker"}
