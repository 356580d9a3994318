"""The live A/B test's assignment: which arm sizes a signal, decided from the signal alone before any sizing.

The arm is a hash of the seed and the signal id (or its symbol) read as a uniform number, so neither policy can
pick its trades, the split follows AB_RL_SHARE, and the same signal, replayed or sent to another worker, always
gets the same arm.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from backend.domain.model import Signal
from backend.sizing.base import SizingPolicy

RL, CONTROL = "rl", "control"


def arm(key: str, seed: int, rl_share: float) -> str:
    """RL or CONTROL for this key: the first 8 bytes of sha256("seed:key") as a number in [0, 1), below
    rl_share: RL."""
    u = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2.0**64
    return RL if u < rl_share else CONTROL


@dataclass(frozen=True)
class Arms:
    rl: SizingPolicy
    control: SizingPolicy
    rl_share: float
    seed: int
    by_symbol: bool  # AB_UNIT=symbol: every signal of a symbol in the same arm

    def assign(self, signal: Signal) -> tuple[str, SizingPolicy]:
        name = arm(signal.symbol if self.by_symbol else signal.signal_id, self.seed, self.rl_share)
        return name, self.rl if name == RL else self.control
