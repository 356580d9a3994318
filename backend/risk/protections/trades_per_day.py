from __future__ import annotations

from dataclasses import dataclass

from backend.risk.trading_state import History, TradingState, Trip


@dataclass(frozen=True)
class TradesPerDay:
    """No new exposure for the rest of the day after `limit` trades placed in it."""

    limit: int
    name: str = "trades_per_day"

    def check(self, h: History) -> Trip | None:
        if h.trades_today < self.limit:
            return None
        return Trip(TradingState.REDUCING, f"{h.trades_today} trades placed today (limit {self.limit}); entries "
                                           "resume tomorrow")
