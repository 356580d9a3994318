"""The protections the settings turn on, one file each; every one follows trading_state.Protection."""
from __future__ import annotations

from backend.config import Settings
from backend.risk.protections.daily_loss import DailyLoss
from backend.risk.protections.drawdown import Drawdown
from backend.risk.protections.loss_streak import LossStreak
from backend.risk.protections.trades_per_day import TradesPerDay
from backend.risk.trading_state import Protection


def protections_from(settings: Settings) -> list[Protection]:
    enabled: list[Protection] = []
    if settings.rm_max_daily_loss_pct is not None:
        enabled.append(DailyLoss(settings.rm_max_daily_loss_pct))
    if settings.rm_max_drawdown_pct is not None:
        enabled.append(Drawdown(settings.rm_max_drawdown_pct))
    if settings.rm_loss_streak is not None:
        enabled.append(LossStreak(settings.rm_loss_streak, settings.rm_loss_streak_cooldown_hours))
    if settings.rm_max_trades_per_day is not None:
        enabled.append(TradesPerDay(settings.rm_max_trades_per_day))
    return enabled
