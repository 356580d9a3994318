from __future__ import annotations

from dataclasses import dataclass

from backend.risk.trading_state import History, TradingState, Trip


@dataclass(frozen=True)
class Drawdown:
    """Nothing new once equity is `limit` below its peak, until it recovers or the operator sets ACTIVE."""

    limit: float
    name: str = "drawdown"

    def check(self, h: History) -> Trip | None:
        drawdown = 1 - h.equity / h.peak_equity if h.peak_equity > 0 else 0.0
        if drawdown < self.limit:
            return None
        return Trip(TradingState.HALTED, f"equity {h.equity:,.2f} is {drawdown:.1%} below its peak "
                                         f"{h.peak_equity:,.2f} (limit {self.limit:.1%}); set ACTIVE to resume")
