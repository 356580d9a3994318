"""A burst of opening signals decided at once never exceeds the gross exposure cap: every decision counts the
entry orders sent before it (pending trades), and openings are decided one at a time (a lock in the process,
an advisory lock across processes on PostgreSQL)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date

import pytest

from backend.bootstrap import build_app, make_sim_broker
from backend.brokers.sim import SimBroker
from backend.data.bundled import Series, load_bundled
from backend.domain.model import Side, Signal
from tests.conftest import make_settings

SYMBOLS = [f"S{i}" for i in range(12)]


@pytest.mark.parametrize("exposure", [0.4, 0.7, 1.1])
def test_a_burst_of_openings_never_exceeds_the_gross_exposure_cap(db_url, exposure):
    settings = make_settings(database_url=db_url, sim_start=date(2012, 3, 1), sizing_policy="fixed",
                             sizing_fixed_exposure=exposure, rm_max_exposure=3.0, rm_max_risk_pct=0.5)
    start = make_sim_broker(settings.model_copy(update={"sim_symbols": ("SP500",)})).index
    spx = load_bundled("SP500")
    full = {s: Series(s, spx.ts, spx.open, spx.high, spx.low, spx.close, spx.volume) for s in SYMBOLS}
    broker = SimBroker(full, start_index=start, initial_cash=settings.sim_initial_cash,
                       multiplier=settings.sim_multiplier)
    app = build_app(settings, broker=broker)
    try:
        equity = broker.account().equity
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda s: app.executor.handle(Signal(f"burst-{s}", s, Side.BUY, 0.7)), SYMBOLS))
        placed = [r for r in results if r.status == "placed"]
        in_flight = sum(r.decision["size_usd"] for r in placed)
        # 12 openings would make 4.8-13.2x: the cap binds, and the in-flight total stops exactly at it
        assert in_flight == pytest.approx(settings.rm_max_exposure * equity, rel=1e-9)
        assert "max_exposure" in placed[-1].decision["capped_by"] or len(placed) < len(SYMBOLS)
        assert app.store.in_flight_notional() == pytest.approx(in_flight)
        assert {r.status for r in results} <= {"placed", "skipped"}  # the rest: sized 0 by the cap, followed
    finally:
        app.close()
