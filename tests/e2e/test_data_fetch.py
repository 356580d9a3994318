"""`sizer data fetch` against the fake Alpaca server: bars into a Parquet cache, then only what is new."""
from __future__ import annotations

import numpy as np
import pytest

from backend.data.files import load_bars
from tests.e2e.test_cli import sizer
from tests.fake_alpaca import Asset, FakeAlpaca, daily_times


@pytest.fixture
def fake():
    server = FakeAlpaca().start()
    server.assets["QQQ"] = Asset("QQQ", price=300.0)
    yield server
    server.stop()


def test_bars_are_fetched_once_into_parquet_files_replay_can_read(fake, tmp_path, sqlite_url):
    env = {k.upper(): str(v) for k, v in fake.settings().items() if k != "broker"}
    env["DATABASE_URL"] = sqlite_url
    cache = tmp_path / "bars"
    args = ("data", "fetch", "--symbols", "SPY,QQQ", "--start", "2000-01-01", "--cache", str(cache))
    r = sizer(*args, env=env)
    assert r.returncode == 0, r.stderr
    spy = load_bars(cache / "SPY-1Day.parquet", "SPY")
    n = len(spy)  # the fake's daily bars, the last left out until it has closed
    assert n in (len(daily_times()) - 1, len(daily_times())) and f"SPY: {n} new bar(s), {n} in" in r.stdout and f"QQQ: {n} new bar(s)" in r.stdout
    assert np.all(np.diff(spy.ts).astype(int) > 0)
    assert load_bars(cache / "QQQ-1Day.parquet", "QQQ").close[-1] == pytest.approx(3 * spy.close[-1])

    again = sizer(*args, env=env)  # only the bars after the last one cached are asked for
    assert again.returncode == 0, again.stderr
    total = len(load_bars(cache / "SPY-1Day.parquet", "SPY"))
    assert total - n in (0, 1) and f"SPY: {total - n} new bar(s), {total} in" in again.stdout
    starts = [s for (symbols, timeframe, s) in fake.bar_requests if symbols == "SPY"]
    assert len(starts) == 2 and starts[1] > spy.ts[-1].astype("datetime64[s]").item().isoformat()

    replay = sizer("replay", "--bars", str(cache / "SPY-1Day.parquet"), "--no-compare", env={"DATABASE_URL": sqlite_url})
    assert replay.returncode == 0, replay.stderr  # the cache feeds the simulator


def test_a_symbol_without_bars_is_said(fake, tmp_path, sqlite_url):
    env = {k.upper(): str(v) for k, v in fake.settings().items() if k != "broker"}
    r = sizer("data", "fetch", "--symbols", "NOPE", "--start", "2020-01-01", "--cache", str(tmp_path),
              env={**env, "DATABASE_URL": sqlite_url})
    assert r.returncode == 2 and "no 1Day bars of NOPE" in r.stderr and not list(tmp_path.iterdir())


def test_fetch_needs_keys_and_a_known_timeframe(tmp_path, sqlite_url):
    r = sizer("data", "fetch", "--symbols", "SPY", "--start", "2020-01-01", env={"DATABASE_URL": sqlite_url})
    assert r.returncode == 2 and "ALPACA_API_KEY_ID" in r.stderr and "Traceback" not in r.stderr
    r = sizer("data", "fetch", "--symbols", "SPY", "--start", "2020-01-01", "--timeframe", "1Week",
              env={"DATABASE_URL": sqlite_url})
    assert r.returncode == 2 and "--timeframe '1Week'" in r.stderr
