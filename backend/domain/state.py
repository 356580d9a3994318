"""The Q-learning agent's discrete world: 300 states, and a menu of exposures as actions.

A state key is `regime|confidence|exposure|performance`, in the predecessors' format. An action is an exposure
(notional / equity), from 0 (skip the trade) up to what the caps allow; its key is the number ("1.25"). The
predecessors' `size_mult|leverage` actions map onto the menu (legacy_action_exposure).
"""
from __future__ import annotations

import bisect
import math
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


@dataclass(frozen=True)
class BucketEdges:
    """Where one bucket ends and the next begins. Defaults are the seed's."""

    high_vol_atr_pct: float = 0.02
    trending_adx: float = 25.0
    ranging_adx: float = 20.0
    confidence: tuple[float, ...] = (0.45, 0.55, 0.70, 0.85)
    exposure: tuple[float, ...] = (0.5, 1.0, 2.0)
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


def confidence_bucket(confidence: float, edges: BucketEdges) -> str:
    return _bucket(confidence, edges.confidence, CONFIDENCE_BUCKETS)


def state_key(
    *, atr_pct: float, adx: float, confidence: float, exposure: float, win_rate: float | None, edges: BucketEdges
) -> str:
    """`win_rate` None (no outcomes yet) is the neutral performance bucket."""
    regime = classify_regime(atr_pct, adx, edges)
    perf = "neutral" if win_rate is None else _bucket(win_rate, edges.performance, PERFORMANCE_BUCKETS)
    return "|".join(
        (
            regime.value,
            confidence_bucket(confidence, edges),
            _bucket(exposure, edges.exposure, EXPOSURE_BUCKETS),
            perf,
        )
    )


# Renard's R10 preferred numbers: each about 1.26x the one before. Between two neighbours the worse is at
# most 11.5% from the continuous optimum, where log growth is still 98.7% of the best (growth falls with the
# square of the relative miss), so the menu's best point is within 97% of the continuous optimum for any f*.
R10 = (1.0, 1.25, 1.6, 2.0, 2.5, 3.15, 4.0, 5.0, 6.3, 8.0)
MIN_EXPOSURE = 0.05  # the smallest bet offered; a Kelly exposure below about 0.04 is a skip
SKIP = "0"


def exposure_menu(max_exposure: float) -> tuple[float, ...]:
    """The actions: 0 (skip) and the R10 exposures (notional / equity) from MIN_EXPOSURE up to `max_exposure`,
    which is itself the top action when it falls between two R10 points (so the caps' limit is reachable)."""
    if not max_exposure >= MIN_EXPOSURE:
        raise ValueError(f"the largest exposure must be at least {MIN_EXPOSURE}, got {max_exposure}")
    grid = sorted({round(r * decade, 6) for decade in (0.01, 0.1, 1.0, 10.0, 100.0) for r in R10})
    menu = [e for e in grid if MIN_EXPOSURE <= e <= max_exposure * (1 + 1e-9)]
    if menu[-1] < max_exposure * (1 - 1e-9):
        menu.append(round(max_exposure, 6))
    return (0.0, *menu)


def action_key(exposure: float) -> str:
    """An action's key: its exposure, written plainly ("0", "0.063", "1.25", "3")."""
    return f"{exposure:g}"


def parse_action_key(key: str) -> float:
    try:
        exposure = float(key)
    except ValueError:
        raise ValueError(f"unknown action key {key!r}: an action is an exposure such as '0.5' or '1.25'") from None
    if not (exposure == 0 or MIN_EXPOSURE <= exposure <= 1000):
        raise ValueError(f"unknown action key {key!r}: exposures are 0 or {MIN_EXPOSURE}..1000")
    return exposure


LEGACY_BASE_EXPOSURE = 0.25  # the ATR rule's exposure at the default 0.5% risk and a 2% stop
LEGACY_SIZE_MULTIPLIERS = (0.3, 0.5, 0.7, 1.0, 1.5)
LEGACY_LEVERAGES = (1, 2, 3, 4, 5)


def legacy_action_exposure(key: str, menu: tuple[float, ...]) -> float:
    """The predecessors' `size_mult|leverage` action sized `base x size_mult x leverage`, where base was the ATR
    rule's notional. Read with the ATR rule's default exposure as base, it is the menu point nearest (in ratio)
    to 0.25 x size_mult x leverage."""
    try:
        size, leverage = (float(part) for part in key.split("|"))
    except ValueError:
        raise ValueError(f"unknown legacy action key {key!r}: expected size_mult|leverage") from None
    if size not in LEGACY_SIZE_MULTIPLIERS or leverage not in LEGACY_LEVERAGES:
        raise ValueError(f"unknown legacy action key {key!r}: size_mult in {LEGACY_SIZE_MULTIPLIERS}, "
                         f"leverage in {LEGACY_LEVERAGES}")
    target = LEGACY_BASE_EXPOSURE * size * leverage
    return min(menu[1:], key=lambda e: abs(math.log(e / target)))


ALL_STATE_KEYS: tuple[str, ...] = tuple(
    f"{r.value}|{c}|{e}|{p}"
    for r in Regime
    for c in CONFIDENCE_BUCKETS
    for e in EXPOSURE_BUCKETS
    for p in PERFORMANCE_BUCKETS
)
ANY = "*"
ROOT_KEY = "*|*|*|*"


def pooling_tree(key: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The levels a state borrows strength from, coarsest first, each with its siblings (the keys that share
    its parent): all trades -> confidence -> regime + confidence -> the full state."""
    regime, confidence, exposure, performance = validate_state_key(key).split("|")
    return (
        (ROOT_KEY, (ROOT_KEY,)),
        (f"*|{confidence}|*|*", tuple(f"*|{c}|*|*" for c in CONFIDENCE_BUCKETS)),
        (f"{regime}|{confidence}|*|*", tuple(f"{r.value}|{confidence}|*|*" for r in Regime)),
        (key, tuple(f"{regime}|{confidence}|{e}|{p}" for e in EXPOSURE_BUCKETS for p in PERFORMANCE_BUCKETS)),
    )


def pooled_keys(key: str) -> tuple[str, ...]:
    """The keys a trade in state `key` teaches: its own and its coarser levels'."""
    return tuple(level for level, _ in pooling_tree(key))


def validate_state_key(key: str, pooled: bool = False) -> str:
    """A full state key; with `pooled`, also a coarser level of one (`*|high|*|*`)."""
    if key in _STATE_KEY_SET or (pooled and key in _POOLED_KEY_SET):
        return key
    raise ValueError(f"unknown state key {key!r}: expected regime|confidence|exposure|performance"
                     + (", or a pooled level such as *|high|*|*" if pooled else ""))


_STATE_KEY_SET = frozenset(ALL_STATE_KEYS)
_POOLED_KEY_SET = frozenset(level for k in ALL_STATE_KEYS for level, _ in pooling_tree(k)[:-1])
