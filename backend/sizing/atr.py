"""The rule-based fallback: risk a fixed fraction of equity between entry and an ATR-based stop."""
from __future__ import annotations

from backend.domain.model import Proposal
from backend.sizing.base import SizingContext


class AtrRule:
    name = "atr"

    def propose(self, ctx: SizingContext) -> Proposal:
        return Proposal(
            size_usd=ctx.base_size_usd,
            leverage=1.0,
            policy=self.name,
            why=(
                f"ATR rule: risk {ctx.base_size_usd * ctx.stop_distance_pct / ctx.account.equity:.2%} of equity "
                f"with the stop {ctx.stop_distance_pct:.2%} away (ATR {ctx.market.atr_pct:.2%} of price)"
            ),
        )
