"""The baselines every policy is ranked against, on the same bars and costs: cash, buy-and-hold of each
asset, equal weight, the ATR rule (in replay, see tracks.replay_track) and a constant Kelly fraction."""
from __future__ import annotations

import numpy as np

from backend.evaluation.tracks import Track, weights_track

KELLY_CAP = 2.0  # the Kelly fraction is clipped to [0, 2]: at most 2x gross, borrowing at 0%


def kelly_fraction(train_close: np.ndarray) -> float:
    """f = mu / sigma^2 of the equal-weight portfolio's daily excess returns (risk-free 0) over the training
    window's closes (S, n) only."""
    r = (train_close[:, 1:] / train_close[:, :-1] - 1).mean(axis=0)
    return float(np.clip(r.mean() / r.var(ddof=1), 0.0, KELLY_CAP))


def baselines(symbols: list[str], close: np.ndarray, train_close: np.ndarray, cost_rate: float,
              atr: Track) -> tuple[dict[str, Track], float]:
    """Baseline tracks over the test closes (S, n), and the Kelly fraction used."""
    n = len(symbols)
    equal = np.full(n, 1.0 / n)
    f = kelly_fraction(train_close)
    tracks = {"cash": weights_track(close, np.zeros(n), cost_rate)}
    for i, symbol in enumerate(symbols):
        tracks[f"buy_hold_{symbol}"] = weights_track(close, np.eye(n)[i], cost_rate)
    tracks["equal_weight"] = weights_track(close, equal, cost_rate)
    tracks["atr_rule"] = atr
    tracks["kelly"] = weights_track(close, f * equal, cost_rate)
    return tracks, f
