"""Each protection on its own: when it trips, to what state, and when it lets go."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from threading import Event

from backend.risk.protections.daily_loss import DailyLoss
from backend.risk.protections.drawdown import Drawdown
from backend.risk.protections.loss_streak import LossStreak
from backend.risk.protections.trades_per_day import TradesPerDay
from backend.risk.trading_state import History, TradingGuard, TradingState

NOW = datetime(2024, 3, 4, 15, tzinfo=timezone.utc)


def history(**changes) -> History:
    base = dict(now=NOW, equity=100_000.0, day_start_equity=100_000.0, peak_equity=100_000.0, results=(),
                last_close=None, trades_today=0)
    return History(**{**base, **changes})


def test_daily_loss_reduces_at_the_limit():
    p = DailyLoss(0.05)
    assert p.check(history(equity=95_001.0)) is None
    trip = p.check(history(equity=95_000.0))
    assert trip.state is TradingState.REDUCING and "5.0% today" in trip.reason


def test_drawdown_halts_below_the_peak():
    p = Drawdown(0.2)
    assert p.check(history(equity=80_001.0)) is None
    trip = p.check(history(equity=70_000.0, day_start_equity=70_000.0))
    assert trip.state is TradingState.HALTED and "30.0% below its peak" in trip.reason


def test_a_losing_streak_cools_down_after_its_last_loss():
    p = LossStreak(3, cooldown_hours=24)
    last = NOW - timedelta(hours=1)
    assert p.check(history(results=(False, False), last_close=last)) is None
    assert p.check(history(results=(False, False, True), last_close=last)) is None  # a win ends the streak
    trip = p.check(history(results=(True, False, False, False), last_close=last))
    assert trip.state is TradingState.REDUCING and "3 losing trades in a row" in trip.reason
    assert p.check(history(results=(False,) * 3, last_close=NOW - timedelta(hours=24))) is None  # cooled down


def test_trades_per_day():
    p = TradesPerDay(10)
    assert p.check(history(trades_today=9)) is None
    assert p.check(history(trades_today=10)).state is TradingState.REDUCING


def test_evaluations_after_trades_are_coalesced_and_none_is_missed():
    """While one thread evaluates, the trades placed meanwhile return at once; one more evaluation follows, with
    the latest equity."""
    started, release, seen = Event(), Event(), []

    class Recording(TradingGuard):
        def evaluate(self, equity):
            seen.append(equity)
            started.set()
            release.wait(10)

    guard = Recording(None, [], lambda: NOW)
    with ThreadPoolExecutor(1) as first:
        running = first.submit(guard.evaluate_after_trade, 1.0)
        assert started.wait(10)
        for equity in (2.0, 3.0, 4.0):  # the evaluation of 1.0 holds: these only leave their equity due
            guard.evaluate_after_trade(equity)
        assert seen == [1.0]
        release.set()
        running.result(10)
    assert seen == [1.0, 4.0]
    guard.evaluate_after_trade(5.0)
    assert seen == [1.0, 4.0, 5.0]
