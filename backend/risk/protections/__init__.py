"""The protections the settings turn on, one file each; every one follows trading_state.Protection."""
from __future__ import annotations

from backend.config import RiskSettings
from backend.risk.protections.daily_loss import DailyLoss
from backend.risk.protections.drawdown import Drawdown
from backend.risk.protections.loss_streak import LossStreak
from backend.risk.protections.trades_per_day import TradesPerDay
from backend.risk.trading_state import Protection


def protections_from(risk: RiskSettings) -> list[Protection]:
    enabled: list[Protection] = []
    if risk.max_daily_loss_pct is not None:
        enabled.append(DailyLoss(risk.max_daily_loss_pct))
    if risk.max_drawdown_pct is not None:
        enabled.append(Drawdown(risk.max_drawdown_pct))
    if risk.loss_streak is not None:
        enabled.append(LossStreak(risk.loss_streak, risk.loss_streak_cooldown_hours))
    if risk.max_trades_per_day is not None:
        enabled.append(TradesPerDay(risk.max_trades_per_day))
    return enabled
