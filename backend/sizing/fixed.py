"""Fixed fractional sizing: the same exposure (notional / equity) for every signal."""
from __future__ import annotations

from backend.domain.model import Proposal
from backend.sizing.base import SizingContext


class FixedExposure:
    name = "fixed"

    def __init__(self, exposure: float) -> None:
        self.exposure = exposure

    def propose(self, ctx: SizingContext) -> Proposal:
        return Proposal(self.exposure, self.name, f"fixed fraction: {self.exposure:g}x equity")
