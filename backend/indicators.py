"""Wilder's ATR and ADX (J. Welles Wilder, "New Concepts in Technical Trading Systems", 1978).

There is one implementation of the Wilder math, `IncrementalWilder`; the batch function `wilder_atr_adx` feeds it,
so a live stream of bars and a batch recomputation over the same bars give the same numbers bit for bit.
"""
from __future__ import annotations

import math

import numpy as np


class InsufficientData(ValueError):
    """Too few bars (or returns) for the requested indicator; never answered with a placeholder."""


def min_bars(period: int) -> int:
    """Bars needed before `wilder_atr_adx` answers.

    TR and DM start at the second bar; `period` of them give the first DI/DX, `period` DX values give the ADX seed
    (after 2*period bars), and one more bar gives the first Wilder-smoothed ADX, which is the first value reported.
    """
    _check_period(period)
    return 2 * period + 1


def history_bars(period: int) -> int:
    """The bars a decision reads (and a simulated clock must have behind it): enough for Wilder's ATR and ADX to
    settle, ten periods, and never fewer than `min_bars`."""
    return max(min_bars(period), 10 * period)


def _check_period(period: int) -> None:
    if isinstance(period, bool) or not isinstance(period, (int, np.integer)) or period < 1:
        raise ValueError(f"period must be a positive integer, got {period!r}")


def _check_bar(high: float, low: float, close: float) -> None:
    for name, value in (("high", high), ("low", low), ("close", close)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be finite and positive, got {value!r}")
    if high < low:
        raise ValueError(f"high {high!r} is below low {low!r}")


class IncrementalWilder:
    """Wilder ATR/ADX updated one bar at a time (oldest first)."""

    def __init__(self, period: int = 14) -> None:
        _check_period(period)
        self.period = int(period)
        self.bars = 0
        self._prev: tuple[float, float, float] | None = None  # previous (high, low, close)
        self._tr = self._pdm = self._mdm = 0.0  # sums of the first `period` values, then Wilder-smoothed sums
        self._atr = 0.0
        self._dx_sum = 0.0  # sum of the first `period` DX values
        self._adx = 0.0

    def update(self, high: float, low: float, close: float) -> None:
        """Add one bar; a bad bar raises ValueError and leaves the state unchanged."""
        high, low, close = float(high), float(low), float(close)
        _check_bar(high, low, close)
        self._feed(((high, low, close),))

    def _feed(self, bars) -> None:
        """The Wilder recurrences over validated (high, low, close) bars; state is kept in locals for speed."""
        p, n = self.period, self.bars
        prev = self._prev
        s_tr, s_pdm, s_mdm = self._tr, self._pdm, self._mdm
        atr, dx_sum, adx = self._atr, self._dx_sum, self._adx
        for bar in bars:
            high, low, close = bar
            n += 1
            if prev is None:
                prev = bar
                continue
            prev_high, prev_low, prev_close = prev
            prev = bar
            # max(H-L, |H-C'|, |L-C'|) written as max(H, C') - min(L, C'): the same float, and fewer calls
            tr = (high if high > prev_close else prev_close) - (low if low < prev_close else prev_close)
            up, down = high - prev_high, prev_low - low
            pdm = up if up > down and up > 0 else 0.0
            mdm = down if down > up and down > 0 else 0.0

            m = n - 1  # TR values so far, this one included
            if m <= p:
                s_tr += tr
                s_pdm += pdm
                s_mdm += mdm
                if m < p:
                    continue
                atr = s_tr / p
            else:
                s_tr = s_tr - s_tr / p + tr
                s_pdm = s_pdm - s_pdm / p + pdm
                s_mdm = s_mdm - s_mdm / p + mdm
                atr = (atr * (p - 1) + tr) / p

            if s_tr > 0:
                pdi, mdi = 100.0 * s_pdm / s_tr, 100.0 * s_mdm / s_tr
            else:
                pdi = mdi = 0.0  # no range at all: no direction
            # the ratio first: |a-b|/(a+b) <= 1 holds in floating point, so DX (and ADX) never exceed 100
            dx = 100.0 * (abs(pdi - mdi) / (pdi + mdi)) if pdi + mdi > 0 else 0.0

            k = m - p + 1  # DX values so far, this one included
            if k <= p:
                dx_sum += dx
                if k == p:
                    adx = dx_sum / p
            else:
                adx = (adx * (p - 1) + dx) / p
        self.bars, self._prev = n, prev
        self._tr, self._pdm, self._mdm = s_tr, s_pdm, s_mdm
        self._atr, self._dx_sum, self._adx = atr, dx_sum, adx

    @property
    def atr(self) -> float:
        """ATR in price units; available after `period + 1` bars."""
        if self.bars < self.period + 1:
            raise InsufficientData(f"ATR({self.period}) needs {self.period + 1} bars, have {self.bars}")
        return self._atr

    @property
    def adx(self) -> float:
        """ADX in 0..100; available after `min_bars(period)` bars, like the batch function."""
        need = min_bars(self.period)
        if self.bars < need:
            raise InsufficientData(f"ADX({self.period}) needs {need} bars, have {self.bars}")
        return self._adx


def _as_prices(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not (np.isfinite(arr).all() and (arr > 0).all()):
        raise ValueError(f"{name} must be finite and positive")
    return arr


def wilder_atr_adx(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 14) -> tuple[float, float]:
    """The last (ATR, ADX) over bars given oldest first; ATR in price units, ADX in 0..100."""
    need = min_bars(period)
    h, lo, c = _as_prices("high", high), _as_prices("low", low), _as_prices("close", close)
    if not len(h) == len(lo) == len(c):
        raise ValueError(f"high, low and close differ in length: {len(h)}, {len(lo)}, {len(c)}")
    if len(h) < need:
        raise InsufficientData(f"ATR/ADX({period}) needs {need} bars, have {len(h)}")
    if (h < lo).any():
        i = int(np.argmax(h < lo))
        raise ValueError(f"high {h[i]!r} is below low {lo[i]!r} at bar {i}")
    w = IncrementalWilder(period)
    w._feed(zip(h.tolist(), lo.tolist(), c.tolist()))  # validated above, as arrays
    return w.atr, w.adx
