"""`sizer backtest` as a user runs it: their bars and signals, several policies, a report checked by hand."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pandas as pd
import pytest

from backend.backtest import PLOTS
from tests.e2e.test_cli import _write_bars, sizer
from tests.fakes import random_walk

SLIP, COMMISSION = 2e-4, 1e-4  # the simulator's defaults


def test_a_backtest_of_your_signals_checked_by_hand(sqlite_url, tmp_path):
    bars = random_walk(260, start=100.0, vol=0.01, seed=4, symbol="ABC")
    _write_bars(tmp_path / "ABC.csv", bars)
    day = lambda i: str(bars.ts[i].astype("datetime64[D]"))  # noqa: E731
    rows = [
        {"timestamp": day(150), "symbol": "ABC", "side": "buy", "confidence": 0.7, "signal_id": "s1",
         "stop_price": 0.9 * bars.close[150], "time_limit_hours": 48},  # 10% away: RM_MAX_RISK_PCT allows 0.8x
        {"timestamp": day(160), "symbol": "ABC", "side": "sell", "confidence": 0.6, "signal_id": "s2",
         "stop_price": 1.1 * bars.close[160], "time_limit_hours": 48},
        {"timestamp": day(170), "symbol": "ABC", "side": "buy", "confidence": 0.9, "signal_id": "s3",
         "stop_price": 0.9 * bars.close[170], "time_limit_hours": 48},
        {"timestamp": day(100), "symbol": "ABC", "side": "buy", "confidence": 0.9, "signal_id": "early"},
        {"timestamp": day(180), "symbol": "XYZ", "side": "buy", "confidence": 0.9, "signal_id": "other"},
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "signals.csv", index=False)
    out = tmp_path / "out"
    r = sizer("backtest", "--bars", str(tmp_path / "ABC.csv"), "--signals", str(tmp_path / "signals.csv"),
              "--policy", "fixed:0.5,atr,qlearning", "--out", str(out), env={"DATABASE_URL": sqlite_url})
    assert r.returncode == 0, r.stderr
    assert "1 unknown symbol" in r.stdout and "1 before the first bar" in r.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["signals"]["read"] == 5 and report["signals"]["used"] == 3
    assert report["signals"]["skipped_ids"] == {"unknown symbol": ["other"], "before the first bar": ["early"]}
    trades = list(csv.DictReader(open(out / "trades.csv")))
    assert {t["policy"] for t in trades} == {"fixed:0.5", "atr", "qlearning"} and len(trades) == 9

    # by hand: sized at the signal bar's close (0.5 x equity), filled at the next open with slippage, out at the
    # open after the 48 h limit (two bars on), 1 bp commission a side
    equity, growth = 100_000.0, []
    fixed = {t["signal_id"]: t for t in trades if t["policy"] == "fixed:0.5"}
    for sid, i, sign in (("s1", 150, 1), ("s2", 160, -1), ("s3", 170, 1)):
        t = fixed[sid]
        quantity = 0.5 * equity / bars.close[i]
        entry, exit_ = bars.open[i + 1] * (1 + sign * SLIP), bars.open[i + 3] * (1 - sign * SLIP)
        pnl = sign * (exit_ - entry) * quantity - (entry + exit_) * quantity * COMMISSION
        assert t["approved"] == "True" and float(t["quantity"]) == pytest.approx(quantity)
        assert float(t["entry_price"]) == pytest.approx(entry) and float(t["exit_price"]) == pytest.approx(exit_)
        assert float(t["equity_before"]) == pytest.approx(equity)
        assert float(t["equity_after"]) == pytest.approx(equity + pnl)
        assert float(t["exposure"]) == pytest.approx(0.5 * entry / bars.close[i])  # at the fill's price
        growth.append(math.log((equity + pnl) / equity))
        equity += pnl
    p = report["policies"]["fixed:0.5"]
    assert p["final_equity"] == pytest.approx(equity) and p["trades"] == 3 and p["mean_leverage"] == 1
    assert report["policies"]["qlearning"]["trades"] == 0  # three trades are no evidence of an edge: skipped
    assert all(t["approved"] == "False" and float(t["exposure"]) == 0 for t in trades if t["policy"] == "qlearning")
    for plot in PLOTS:
        assert (out / plot).stat().st_size > 1000

    # paired against the first policy named: the Q agent placed nothing (log growth 0 on every signal), so its
    # differences are minus the fixed fraction's log growth per trade
    paired = report["paired"]
    assert paired["baseline"] == "fixed:0.5" and set(paired["policies"]) == {"atr", "qlearning"}
    q = paired["policies"]["qlearning"]
    d = -np.array(growth)
    se = d.std(ddof=1) / math.sqrt(3)
    t975 = 4.302653  # Student's t, 2 degrees of freedom
    assert (q["signals"], q["df"]) == (3, 2) and q["mean"] == pytest.approx(d.mean())
    assert q["t"] == pytest.approx(d.mean() / se) and q["ci"] == pytest.approx([d.mean() - t975 * se,
                                                                               d.mean() + t975 * se])
    # a resample of three pairs is all the smallest (or all the largest) one with probability 1/27 = 3.7%, so the
    # 2.5% and 97.5% bootstrap quantiles are the smallest and the largest difference
    assert q["bootstrap_ci"] == pytest.approx([min(d), max(d)])
    assert "paired, signal by signal, against fixed:0.5" in r.stdout


def test_the_baseline_must_be_one_of_the_policies(sqlite_url):
    r = sizer("backtest", "--policy", "qlearning,atr", "--baseline", "kelly", env={"DATABASE_URL": sqlite_url})
    assert r.returncode == 2 and "--baseline 'kelly' is not one of the policies (qlearning, atr)" in r.stderr


@pytest.mark.parametrize("content, message", [
    ("timestamp,symbol,side,confidence\n2001-01-01,ABC,buy,1.5\n", "row 1, column 'confidence'"),
    ("timestamp,symbol,side,confidence\n2001-01-01,ABC,hold,0.5\n", "row 1, column 'side'"),
    ("timestamp,symbol,side,confidence\nsoon,ABC,buy,0.5\n", "row 1, column 'timestamp'"),
    ("timestamp,symbol,side,confidence,stop_price\n2001-01-01,ABC,buy,0.5,-3\n", "row 1, column 'stop_price'"),
    ("timestamp,symbol,side,confidence,signal_id\n2001-01-01,ABC,buy,0.5,a\n2001-01-02,ABC,buy,0.5,a\n",
     "row 2, column 'signal_id'"),
    ("timestamp,symbol,side\n2001-01-01,ABC,buy\n", "missing column(s) confidence"),
])
def test_bad_signal_files_stop_with_the_row_and_column(sqlite_url, tmp_path, content, message):
    (tmp_path / "signals.csv").write_text(content)
    r = sizer("backtest", "--signals", str(tmp_path / "signals.csv"), "--policy", "atr",
              "--out", str(tmp_path / "out"), env={"DATABASE_URL": sqlite_url})
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_unknown_policies_are_refused(sqlite_url, tmp_path):
    r = sizer("backtest", "--policy", "qlearning,martingale", env={"DATABASE_URL": sqlite_url})
    assert r.returncode == 2 and "unknown policy 'martingale'" in r.stderr


def test_the_api_on_the_simulated_clock_trades_as_the_backtest(sqlite_url, tmp_path):
    """The same signals posted to the API when the simulated clock shows their bar make the same trades as
    `sizer backtest`: one engine."""
    from fastapi.testclient import TestClient

    from backend.api.app import create_api
    from backend.data.signals import ScheduledSignals, load_signals
    from tests.conftest import make_settings

    bars = random_walk(300, start=50.0, vol=0.012, seed=9, symbol="ABC")
    _write_bars(tmp_path / "ABC.csv", bars)
    rows = [{"timestamp": str(bars.ts[i].astype("datetime64[D]")), "symbol": "ABC", "side": side,
             "confidence": 0.6, "signal_id": f"s{i}", "time_limit_hours": 72}
            for i, side in zip(range(150, 290, 7), ["buy", "sell"] * 10)]
    pd.DataFrame(rows).to_csv(tmp_path / "signals.csv", index=False)
    out = tmp_path / "out"
    r = sizer("backtest", "--bars", str(tmp_path / "ABC.csv"), "--signals", str(tmp_path / "signals.csv"),
              "--policy", "fixed:0.5", "--out", str(out), env={"DATABASE_URL": sqlite_url})
    assert r.returncode == 0, r.stderr
    backtested = {t["signal_id"]: t for t in csv.DictReader(open(out / "trades.csv"))}

    settings = make_settings(database_url=f"sqlite:///{tmp_path}/api.db", sim_bars=(str(tmp_path / "ABC.csv"),),
                             sim_start=None, sizing_policy="fixed", sizing_fixed_exposure=0.5)
    app = create_api(settings, run_clock=False)
    with TestClient(app) as http:
        service = app.state.service
        schedule = ScheduledSignals.schedule(load_signals(tmp_path / "signals.csv"), service.broker.calendar,
                                             service.broker.symbols, service.broker.index)
        while service.broker.bars_left > 0:
            for s in schedule(service):
                body = {"signal_id": s.signal_id, "symbol": s.symbol, "side": s.side.value,
                        "confidence": s.confidence, "time_limit_hours": s.time_limit_hours}
                assert http.post("/v1/signals", json=body).status_code in (200, 201)
            service.engine.step()
        served = {t["signal_id"]: t for t in http.get("/v1/trades", params={"limit": 500}).json()["items"]}
    placed = {sid: t for sid, t in backtested.items() if t["approved"] == "True"}
    assert len(placed) >= 10 and set(placed) == {sid for sid, t in served.items() if t["status"] == "closed"}
    for sid, t in placed.items():
        assert float(t["entry_price"]) == pytest.approx(served[sid]["entry_price"])
        assert float(t["exit_price"]) == pytest.approx(served[sid]["exit_price"])
        assert float(t["quantity"]) == pytest.approx(served[sid]["quantity"])
