"""The rule-based fallback: risk a fixed fraction of equity between entry and an ATR-based stop."""
from __future__ import annotations

from backend.domain.model import Proposal
from backend.sizing.base import SizingContext


class AtrRule:
    name = "atr"

    def propose(self, ctx: SizingContext) -> Proposal:
        return Proposal(
            exposure=ctx.atr_exposure,
            policy=self.name,
            why=(
                f"ATR rule: {ctx.atr_exposure:.3g}x equity risks {ctx.atr_exposure * ctx.stop_distance_pct:.2%} of "
                f"equity with the stop {ctx.stop_distance_pct:.2%} away (ATR {ctx.market.atr_pct:.2%} of price)"
            ),
        )
