"""GET /v1/ab over the HTTP API: decisions are assigned to arms by their id, and the reported trades of each arm
are counted and compared."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from backend.api.app import create_api
from backend.sizing.ab import arm
from tests.conftest import make_settings
from tests.fakes import experienced_cells

KEY = "k" * 16
T0 = datetime(2024, 5, 1, 14, 30, tzinfo=timezone.utc)


def test_decisions_are_split_between_the_arms_and_compared(sqlite_url):
    settings = make_settings(database_url=sqlite_url, sizer_api_key=KEY, ab_enabled=True, ab_seed=9,
                             ab_control="fixed", sizing_fixed_exposure=0.5)
    app = create_api(settings, run_clock=False)
    headers = {"X-API-Key": KEY}
    with TestClient(app) as http:
        service = app.state.service
        service.store.q_table.import_q_table(experienced_cells(settings.risk.exposure_menu()), replace=True)
        assert http.get("/v1/ab").status_code == 401  # keyed like every /v1 route
        empty = http.get("/v1/ab", headers=headers).json()
        assert empty["enabled"] and empty["verdict"] == "not yet significant" and empty["arms"]["rl"]["signals"] == 0
        pnl = {"rl": 0.0, "control": 0.0}
        for i in range(30):
            d = http.post("/v1/decisions", json={"symbol": "SP500", "side": "buy", "confidence": 0.8},
                          headers=headers).json()
            assert d["arm"] == arm(d["decision_id"], 9, 0.5)  # the hash of the seed and the decision's id
            assert (d["policy"] == "fixed") == (d["arm"] == "control")
            if d["arm"] == "control":
                assert d["exposure"] == pytest.approx(0.5)
            move = 0.02 if i % 3 else -0.01
            report = dict(entry_price=d["price"], exit_price=d["price"] * (1 + move), quantity=d["quantity"],
                          opened_at=T0.isoformat(), closed_at=(T0 + timedelta(days=1)).isoformat(),
                          worst_price=d["price"] * 0.985)
            r = http.post(f"/v1/decisions/{d['decision_id']}/outcome", json=report, headers=headers)
            assert r.status_code == 200, r.text
            pnl[d["arm"]] += d["quantity"] * d["price"] * move
        ab = http.get("/v1/ab", headers=headers).json()
    arms = ab["arms"]
    assert arms["rl"]["signals"] + arms["control"]["signals"] == 30 and min(arms["rl"]["signals"],
                                                                            arms["control"]["signals"]) >= 5
    for name in ("rl", "control"):
        assert arms[name]["total_pnl"] == pytest.approx(pnl[name])
        assert arms[name]["win_rate"] == pytest.approx(2 / 3, abs=0.2)
    # R = pnl / (quantity x |entry - stop|) does not depend on the size: the same moves give about the same R
    assert ab["r_multiple_difference"]["mean"] == pytest.approx(0, abs=0.5)
    assert ab["log_growth_difference"]["n"] == 30 and math.isfinite(ab["log_growth_difference"]["p_value"])
    assert ab["control"] == "fixed" and ab["rl_policy"] == "qlearning"
