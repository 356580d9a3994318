"""The embedded default keeps its simulated account: a restart in the middle of open trades resumes the clock,
cash, positions and orders, cancels nothing, and every trade is rewarded once. The end of the data is a state
one can see."""
from __future__ import annotations

from datetime import date

import httpx
from sqlalchemy import func, select

from backend.api.app import create_api
from backend.store.tables import OutcomeRow
from tests.conftest import make_settings


class Running:
    """The service as `sizer serve` builds it (lifespan included), its clock driven by the test."""

    def __init__(self, settings) -> None:
        self.app = create_api(settings, run_clock=False)

    async def __aenter__(self):
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        self.service = self.app.state.service
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://sizer")
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.aclose()
        await self._lifespan.__aexit__(*exc)


def signal(signal_id: str, symbol: str, **extra) -> dict:
    return {"signal_id": signal_id, "symbol": symbol, "side": "buy", "confidence": 0.7, **extra}


async def test_a_restart_resumes_open_trades_and_rewards_them_once(db_url):
    settings = make_settings(database_url=db_url, sim_start=date(2012, 3, 1), sizing_policy="fixed",
                             sizing_fixed_exposure=0.5)
    async with Running(settings) as first:
        r = await first.client.post("/v1/signals", json=signal("open-1", "SP500", time_limit_hours=24 * 10))
        assert r.json()["status"] == "placed", r.text
        first.service.engine.step()  # filled: an open trade
        r = await first.client.post("/v1/signals", json=signal("pending-1", "NASDAQ", time_limit_hours=24 * 10))
        assert r.json()["status"] == "placed"  # its order waits for the next bar
        before = (first.service.broker.now(), first.service.broker.account(), first.service.broker.positions(),
                  [o.client_order_id for o in first.service.broker.open_orders()])
        assert len(before[2]) == 1 and len(before[3]) == 1

    async with Running(settings) as second:
        broker = second.service.broker
        assert (broker.now(), broker.account(), broker.positions(),
                [o.client_order_id for o in broker.open_orders()]) == before
        assert second.service.reconciliation.differences == []
        trades = {t["signal_id"]: t for t in (await second.client.get("/v1/trades")).json()["items"]}
        assert trades["open-1"]["status"] == "open" and trades["pending-1"]["status"] == "pending"
        second.service.engine.step()
        assert second.service.store.trades.trade_for_signal("pending-1").status == "open"
        for _ in range(20):
            second.service.engine.step()
        statuses = {t["signal_id"]: t["status"] for t in (await second.client.get("/v1/trades")).json()["items"]}
        assert statuses == {"open-1": "closed", "pending-1": "closed"}
        with second.service.store.session() as s:
            assert s.scalar(select(func.count()).select_from(OutcomeRow)) == 2

    async with Running(settings) as third:  # nothing is learned twice on a further restart
        with third.service.store.session() as s:
            assert s.scalar(select(func.count()).select_from(OutcomeRow)) == 2
        assert third.service.store.q_table.agent().total_updates == 2


async def test_other_bars_start_a_fresh_account(sqlite_url):
    async with Running(make_settings(database_url=sqlite_url, sim_start=date(2012, 3, 1))) as first:
        first.service.engine.step()
    async with Running(make_settings(database_url=sqlite_url, sim_start=date(2012, 3, 1),
                                     sim_symbols=("SP500",))) as other:
        assert other.service.broker.now().date() == date(2012, 3, 1)  # not the other account's clock


async def test_the_end_of_the_data_is_visible_and_refuses_new_signals(sqlite_url):
    async with Running(make_settings(database_url=sqlite_url, sim_start=date(2018, 12, 27))) as running:
        while running.service.broker.bars_left:
            running.service.engine.step()
        health = await running.client.get("/healthz")
        assert health.status_code == 503 and "the data end at 2018-12-31" in health.json()["checks"]["broker"]
        r = await running.client.post("/v1/signals", json=signal("late", "SP500"))
        assert r.status_code == 409 and "ended" in r.json()["detail"]
        r = await running.client.post("/v1/decisions", json={"symbol": "SP500", "side": "buy", "confidence": 0.7})
        assert r.status_code == 409
        assert running.service.store.trades.signal("late") is None
