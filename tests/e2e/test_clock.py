"""The market's clock through the API: seen, paused, resumed, stepped and sped up on the simulator; the real
broker's clock shown and not driven; the account sampled at each tick."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from datetime import date

import httpx
import pytest

from backend.api.app import create_api
from tests.conftest import make_settings
from tests.fake_alpaca import FakeAlpaca
from tests.fakes import experienced_cells


@asynccontextmanager
async def serving(run_clock: bool = False, **overrides):
    app = create_api(make_settings(**overrides), run_clock=run_clock)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sizer") as client:
            client.service = app.state.service
            yield client


async def clock(client) -> dict:
    r = await client.get("/v1/clock")
    assert r.status_code == 200, r.text
    return r.json()


async def test_steps_show_bars_trade_and_sample_the_account(sqlite_url):
    async with serving(database_url=sqlite_url) as api:
        api.service.store.q_table.import_q_table(experienced_cells(api.service.settings.risk.exposure_menu()), replace=True)
        start = await clock(api)
        assert start == {"source": "simulator", "broker": "sim", "now": "2008-01-02T00:00:00Z", "paused": True,
                         "speed": 1.0, "bar_seconds": 3600.0, "bars_left": start["bars_left"],
                         "ends_at": "2018-12-31T00:00:00Z"}
        r = await api.post("/v1/signals", json={"signal_id": "c-1", "symbol": "SP500", "side": "buy",
                                                "confidence": 0.9, "time_limit_hours": 24 * 30})
        assert r.status_code == 201, r.text

        r = await api.post("/v1/clock", json={"step": 1})
        assert r.status_code == 200, r.text
        assert r.json()["now"] == "2008-01-03T00:00:00Z" and r.json()["bars_left"] == start["bars_left"] - 1
        assert r.json()["paused"]  # a step does not resume the clock
        assert (await api.get("/v1/trades", params={"status": "open"})).json()["total"] == 1  # filled at the open
        account = (await api.get("/v1/positions")).json()["account"]
        sample = (await api.get("/v1/equity")).json()["samples"][-1]
        assert sample["equity"] == pytest.approx(account["equity"]) and sample["exposure"] > 2  # the agent's size

        r = await api.post("/v1/clock", json={"step": 2})
        assert r.json()["now"] == "2008-01-07T00:00:00Z" and r.json()["bars_left"] == start["bars_left"] - 3
        assert (await api.get("/v1/trades", params={"status": "closed"})).json()["total"] == 1  # its stop, in a fall
        samples = (await api.get("/v1/equity")).json()["samples"]
        assert [s["at"][:10] for s in samples] == ["2008-01-02", "2008-01-03", "2008-01-04", "2008-01-07"]
        assert samples[0] == {"at": "2008-01-02T00:00:00Z", "equity": 100_000.0, "cash": 100_000.0,
                              "gross_position_value": 0.0, "exposure": 0.0}
        assert samples[-1]["exposure"] == 0 and samples[-1]["equity"] == samples[-1]["cash"] < 100_000
        assert [s["at"][:10] for s in (await api.get("/v1/equity", params={"limit": 2})).json()["samples"]] == [
            "2008-01-04", "2008-01-07"]


async def test_pause_resume_and_speed_drive_the_running_clock(sqlite_url):
    async with serving(run_clock=True, database_url=sqlite_url, sim_bar_seconds=5.0) as api:
        assert not (await clock(api))["paused"]
        r = await api.post("/v1/clock", json={"speed": 50})  # a bar every 0.1 s
        assert r.json()["speed"] == 50 and r.json()["bar_seconds"] == pytest.approx(0.1)
        left = r.json()["bars_left"]
        await asyncio.sleep(1.0)
        ran = left - (await clock(api))["bars_left"]
        assert 3 <= ran <= 11, ran

        paused = (await api.post("/v1/clock", json={"paused": True})).json()
        assert paused["paused"]
        await asyncio.sleep(0.5)
        assert (await clock(api))["bars_left"] == paused["bars_left"]

        r = await api.post("/v1/clock", json={"paused": False, "speed": 100})
        assert not r.json()["paused"] and r.json()["bar_seconds"] == pytest.approx(0.05)
        await asyncio.sleep(0.5)
        assert (await clock(api))["bars_left"] < paused["bars_left"]


async def test_the_end_of_the_data_and_bad_commands(sqlite_url):
    async with serving(database_url=sqlite_url, sim_start=date(2018, 12, 20)) as api:
        left = (await clock(api))["bars_left"]
        assert 0 < left < 10
        r = await api.post("/v1/clock", json={"step": left + 1})
        assert r.status_code == 409 and f"{left + 1} bars asked for, {left} left" in r.json()["detail"]
        assert (await clock(api))["bars_left"] == left  # nothing stepped
        assert (await api.post("/v1/clock", json={"step": left})).json()["bars_left"] == 0
        assert (await api.post("/v1/clock", json={"step": 1})).status_code == 409
        for body, field in (({}, "body"), ({"step": 0}, "step"), ({"step": 51}, "step"), ({"speed": 0}, "speed"),
                            ({"speed": 101}, "speed"), ({"pause": True}, "pause")):
            r = await api.post("/v1/clock", json=body)
            assert r.status_code == 422 and field in r.json()["detail"][0]["loc"], (body, r.text)


async def test_a_real_brokers_clock_is_shown_and_not_driven(sqlite_url):
    fake = FakeAlpaca().start()
    try:
        async with serving(database_url=sqlite_url, sizing_policy="fixed", **fake.settings()) as api:
            shown = await clock(api)
            assert shown["source"] == "broker" and shown["broker"] == "alpaca"
            assert shown["bars_left"] is None and shown["ends_at"] is None
            assert shown["bar_seconds"] == api.service.settings.alpaca.poll_seconds
            for body in ({"paused": True}, {"step": 1}, {"speed": 2}):
                r = await api.post("/v1/clock", json=body)
                assert r.status_code == 409 and "alpaca broker's" in r.json()["detail"], r.text
            assert (await api.get("/v1/equity")).json()["samples"][0]["equity"] > 0  # sampled at start-up
    finally:
        fake.stop()
