"""The Q-learning agent's discrete world: 300 states x 25 actions.

A state key is `regime|confidence|exposure|performance`, an action key is `size_mult|leverage`,
both in the predecessors' JSON format so exported Q-tables stay readable by their tools.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from enum import Enum


class Regime(str, Enum):
    LOW_VOL_TRENDING = "low_vol_trending"
    HIGH_VOL_TRENDING = "high_vol_trending"
    LOW_VOL_RANGING = "low_vol_ranging"
    HIGH_VOL_RANGING = "high_vol_ranging"
    NEUTRAL = "neutral"  # ADX between the ranging and trending thresholds: no clear trend either way


CONFIDENCE_BUCKETS = ("very_low", "low", "medium", "high", "very_high")
EXPOSURE_BUCKETS = ("light", "moderate", "heavy", "max")
PERFORMANCE_BUCKETS = ("bad", "neutral", "good")
SIZE_MULTIPLIERS = (0.3, 0.5, 0.7, 1.0, 1.5)
LEVERAGES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class BucketEdges:
    """Where one bucket ends and the next begins. Defaults are the seed's."""

    high_vol_atr_pct: float = 0.02
    trending_adx: float = 25.0
    ranging_adx: float = 20.0
    confidence: tuple[float, ...] = (0.45, 0.55, 0.70, 0.85)
    exposure: tuple[float, ...] = (0.30, 0.60, 0.80)
    performance: tuple[float, ...] = (0.45, 0.60)

    def __post_init__(self) -> None:
        for name, edges, n in (
            ("confidence", self.confidence, len(CONFIDENCE_BUCKETS)),
            ("exposure", self.exposure, len(EXPOSURE_BUCKETS)),
            ("performance", self.performance, len(PERFORMANCE_BUCKETS)),
        ):
            if len(edges) != n - 1 or list(edges) != sorted(edges):
                raise ValueError(f"{name} bucket edges must be {n - 1} ascending numbers, got {edges}")
        if self.ranging_adx > self.trending_adx:
            raise ValueError("ranging_adx must not exceed trending_adx")


def classify_regime(atr_pct: float, adx: float, edges: BucketEdges) -> Regime:
    high_vol = atr_pct > edges.high_vol_atr_pct
    if adx > edges.trending_adx:
        return Regime.HIGH_VOL_TRENDING if high_vol else Regime.LOW_VOL_TRENDING
    if adx < edges.ranging_adx:
        return Regime.HIGH_VOL_RANGING if high_vol else Regime.LOW_VOL_RANGING
    return Regime.NEUTRAL


def _bucket(value: float, edges: tuple[float, ...], names: tuple[str, ...]) -> str:
    return names[bisect.bisect_right(edges, value)]


def state_key(
    *, atr_pct: float, adx: float, confidence: float, exposure: float, win_rate: float | None, edges: BucketEdges
) -> str:
    """`win_rate` None (no outcomes yet) is the neutral performance bucket."""
    regime = classify_regime(atr_pct, adx, edges)
    perf = "neutral" if win_rate is None else _bucket(win_rate, edges.performance, PERFORMANCE_BUCKETS)
    return "|".join(
        (
            regime.value,
            _bucket(confidence, edges.confidence, CONFIDENCE_BUCKETS),
            _bucket(exposure, edges.exposure, EXPOSURE_BUCKETS),
            perf,
        )
    )


@dataclass(frozen=True)
class Action:
    size_mult: float
    leverage: int

    @property
    def key(self) -> str:
        return f"{self.size_mult}|{float(self.leverage)}"

    @staticmethod
    def parse(key: str) -> "Action":
        size, lev = key.split("|")
        action = Action(float(size), int(float(lev)))
        if action not in ACTIONS:
            raise ValueError(f"unknown action key {key!r}")
        return action


ACTIONS: tuple[Action, ...] = tuple(Action(s, lev) for s in SIZE_MULTIPLIERS for lev in LEVERAGES)
ALL_STATE_KEYS: tuple[str, ...] = tuple(
    f"{r.value}|{c}|{e}|{p}"
    for r in Regime
    for c in CONFIDENCE_BUCKETS
    for e in EXPOSURE_BUCKETS
    for p in PERFORMANCE_BUCKETS
)


def validate_state_key(key: str) -> str:
    if key not in _STATE_KEY_SET:
        raise ValueError(f"unknown state key {key!r}")
    return key


_STATE_KEY_SET = frozenset(ALL_STATE_KEYS)
