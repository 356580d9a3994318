"""The one interface every sizing policy implements."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from backend.domain.model import Account, MarketContext, Proposal, Signal


@dataclass(frozen=True)
class SizingContext:
    signal: Signal
    market: MarketContext
    account: Account
    stop_distance_pct: float  # |price - stop| / price
    base_size_usd: float  # the notional that risks RM_RISK_PER_TRADE_PCT of equity at the stop
    state_key: str
    fits_caps: Callable[[float, float], bool]  # (size_usd, leverage) -> would no cap change it?


class SizingPolicy(Protocol):
    name: str

    def propose(self, ctx: SizingContext) -> Proposal: ...
