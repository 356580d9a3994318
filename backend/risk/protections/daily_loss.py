from __future__ import annotations

from dataclasses import dataclass

from backend.risk.trading_state import History, TradingState, Trip


@dataclass(frozen=True)
class DailyLoss:
    """No new exposure for the rest of the day once equity is down `limit` from the day's start."""

    limit: float
    name: str = "daily_loss"

    def check(self, h: History) -> Trip | None:
        lost = 1 - h.equity / h.day_start_equity if h.day_start_equity > 0 else 0.0
        if lost < self.limit:
            return None
        return Trip(TradingState.REDUCING, f"lost {lost:.1%} today (limit {self.limit:.1%}); entries resume tomorrow")
