"""Each protection on its own: when it trips, to what state, and when it lets go."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from backend.risk.protections.daily_loss import DailyLoss
from backend.risk.protections.drawdown import Drawdown
from backend.risk.protections.loss_streak import LossStreak
from backend.risk.protections.trades_per_day import TradesPerDay
from backend.risk.trading_state import History, TradingState

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
