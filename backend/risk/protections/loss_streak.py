from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from backend.risk.trading_state import History, TradingState, Trip


@dataclass(frozen=True)
class LossStreak:
    """After `losses` losing trades in a row, no new exposure for `cooldown_hours` after the last of them (each
    further loss of the streak starts the cooldown again)."""

    losses: int
    cooldown_hours: float
    name: str = "loss_streak"

    def check(self, h: History) -> Trip | None:
        streak = len(h.results) - max((i + 1 for i, won in enumerate(h.results) if won), default=0)
        if streak < self.losses or h.last_close is None:
            return None
        until = h.last_close + timedelta(hours=self.cooldown_hours)
        if h.now >= until:
            return None
        return Trip(TradingState.REDUCING, f"{streak} losing trades in a row (limit {self.losses}); entries resume "
                                           f"at {until:%Y-%m-%d %H:%M} UTC")
