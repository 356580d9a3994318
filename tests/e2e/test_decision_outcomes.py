"""Sizing for bots that trade elsewhere: POST /v1/decisions, then the outcome reported through SizerClient."""
from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from backend.api.app import create_api
from backend.client import SizerClient, SizerError
from tests.conftest import make_settings
from tests.fakes import experienced_cells

T0 = datetime(2024, 5, 1, 14, 30, tzinfo=timezone.utc)


@pytest.fixture
def served(db_url):
    app = create_api(make_settings(database_url=db_url, sizer_api_key="k" * 16), run_clock=False)
    with TestClient(app) as http:
        service = app.state.service
        service.store.q_table.import_q_table(experienced_cells(service.settings.risk.exposure_menu()), replace=True)
        yield SizerClient(api_key="k" * 16, http=http), service


def report_for(d, exit_move: float = 0.02, **changes) -> dict:
    entry = d.price
    report = dict(entry_price=entry, exit_price=entry * (1 + exit_move), quantity=d.quantity, opened_at=T0,
                  closed_at=T0 + timedelta(days=2), worst_price=entry * 0.99, commission=1.5)
    return {**report, **changes}


def test_a_reported_outcome_teaches_every_size_exactly_once(served):
    client, service = served
    d = client.decide("SP500", "buy", confidence=0.8)
    assert d.approved and d.decision_id.startswith("dec-") and d.exposure >= 1
    assert service.broker.positions() == [] and service.store.trades.active_trade("SP500") is None  # nothing placed or held
    service.store.trades.flush_decisions()
    state = service.store.trades.trade_for_signal(d.decision_id).rl_state_key
    report = report_for(d)
    learned = client.report(d.decision_id, **report)
    path_return = 0.02 - 1.5 / (d.quantity * d.price)
    assert learned.learned and learned.trade_return == pytest.approx(path_return)
    assert learned.exposure == pytest.approx(d.exposure, rel=1e-9)
    assert learned.reward == pytest.approx(100 * math.log(1 + d.exposure * path_return))
    cells = {c.action_key: c for c in service.store.q_table.q_values(state, 0, 100)[1]}
    assert {c.visits for c in cells.values()} == {1}
    assert cells["1"].q == pytest.approx(100 * math.log(1 + path_return))  # what 1x would have earned
    agent = service.store.q_table.agent()

    again = client.report(d.decision_id, **report)  # the same report: answered as before, nothing learned
    assert not again.learned and again.reward == learned.reward
    assert service.store.q_table.agent().total_updates == agent.total_updates
    assert {c.visits for c in service.store.q_table.q_values(state, 0, 100)[1]} == {1}

    with pytest.raises(SizerError) as conflict:
        client.report(d.decision_id, **{**report, "exit_price": report["exit_price"] * 1.01})
    assert conflict.value.status == 409 and "another outcome" in conflict.value.detail
    with pytest.raises(SizerError) as unknown:
        client.report("dec-nope", **report)
    assert unknown.value.status == 404
    counts = client._http.get("/v1/agent").json()["decisions"]
    assert counts == {"awaiting_report": 0, "reported": 1, "expired": 0}


def test_bad_reports_are_refused_with_the_field(served):
    client, service = served
    d = client.decide("NASDAQ", "sell", confidence=0.8)
    good = dict(exit_move=-0.01, worst_price=d.price * 1.01)
    for changes, field in [({"worst_price": d.price * 0.98}, "worst_price"),  # a sell's worst is above
                           ({"closed_at": T0 - timedelta(hours=1)}, "closed_before_opened"),
                           ({"quantity": -1}, "quantity"), ({"entry_price": 0}, "entry_price")]:
        with pytest.raises(SizerError) as err:
            client.report(d.decision_id, **report_for(d, **{**good, **changes}))
        assert err.value.status == 422 and field in str(err.value.detail)
    assert service.store.trades.trade_for_signal(d.decision_id).status == "external"  # nothing was learned
    assert client.report(d.decision_id, **report_for(d, **good)).learned


def test_an_unreported_decision_expires(db_url):
    app = create_api(make_settings(database_url=db_url, decision_report_hours=1e-6), run_clock=False)
    with TestClient(app) as http:
        client = SizerClient(http=http)
        d = client.decide("SP500", "buy", confidence=0.5)
        assert d.decision_id and not d.approved and d.skipped  # a fresh agent skips: still reportable
        time.sleep(0.05)
        with pytest.raises(SizerError) as err:
            client.report(d.decision_id, **report_for(d, quantity=10.0))
        assert err.value.status == 409 and "expired" in err.value.detail
        assert http.get("/v1/agent").json()["decisions"] == {"awaiting_report": 0, "reported": 0, "expired": 1}


def test_concurrent_duplicate_reports_learn_once(pg_url):
    app = create_api(make_settings(database_url=pg_url), run_clock=False)
    with TestClient(app) as http:
        client, service = SizerClient(http=http), app.state.service
        d = client.decide("SP500", "buy", confidence=0.8)
        report = report_for(d, quantity=10.0)
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda _: client.report(d.decision_id, **report), range(8)))
    assert sum(a.learned for a in answers) == 1 and len({a.reward for a in answers}) == 1
    assert service.store.q_table.agent().total_updates == 1 and service.store.outcomes.outcomes(0, 10)[0] == 1


def test_decisions_made_at_once_are_all_kept(pg_url):
    """Decisions are written behind the answer, in batches: every one is there to be reported on."""
    app = create_api(make_settings(database_url=pg_url), run_clock=False)
    with TestClient(app) as http:
        client = SizerClient(http=http)
        with ThreadPoolExecutor(max_workers=8) as pool:
            decisions = list(pool.map(lambda i: client.decide("SP500" if i % 2 else "NASDAQ", "buy", 0.5), range(200)))
        assert len({d.decision_id for d in decisions}) == 200
        assert http.get("/v1/agent").json()["decisions"]["awaiting_report"] == 200
        last = decisions[-1]
        assert client.report(last.decision_id, **report_for(last, quantity=5.0)).learned


@pytest.mark.parametrize("extreme", [
    dict(entry_price=5e-324, exit_price=5e-324, quantity=5e-324, worst_price=5e-324),  # a notional of 0
    dict(entry_price=1e-300, exit_price=1e9, worst_price=1e-300, quantity=1.0),  # an infinite return
])
def test_the_monitor_itself_refuses_a_report_with_no_finite_outcome(served, extreme):
    """The API bounds keep these out; the monitor must not learn from them if another caller sends them."""
    from backend.domain.model import OutcomeReport
    from backend.risk import SizingError

    client, service = served
    d = client.decide("SP500", "buy", confidence=0.8)
    report = OutcomeReport(**{**report_for(d, commission=0.0), **extreme})
    with pytest.raises(SizingError):
        service.monitor.report(d.decision_id, report)
    assert service.store.trades.trade_for_signal(d.decision_id).status == "external"  # nothing learned, still reportable
    assert service.store.q_table.agent().total_updates == 0
