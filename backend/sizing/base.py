"""The one interface every sizing policy implements."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from backend.domain.model import Account, MarketContext, Proposal, Signal


@dataclass(frozen=True)
class SizingContext:
    signal: Signal
    market: MarketContext
    account: Account
    stop_distance_pct: float  # |price - stop| / price
    state_key: str
    max_exposure: float  # the largest exposure (notional / equity) every cap allows for this trade
    min_exposure: float  # a smaller positive exposure is below the minimum order (RM_MIN_POSITION_USD)
    atr_exposure: float  # the ATR rule's: RM_RISK_PER_TRADE_PCT of equity lost at the stop
    win_rate: float | None = None  # of the last RL_SIZING_WIN_RATE_WINDOW outcomes (None before any)

    def feasible(self, exposure: float) -> bool:
        """Whether the caps would place this exposure unchanged (0, the skip, always is)."""
        return exposure == 0 or self.min_exposure <= exposure <= self.max_exposure * (1 + 1e-9)


class SizingPolicy(Protocol):
    name: str

    def propose(self, ctx: SizingContext) -> Proposal: ...
