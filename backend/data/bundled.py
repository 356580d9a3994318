"""Real daily bars bundled with the `arch` package: S&P 500 and NASDAQ Composite, 1999-2018.

They are read from the installed package on demand, never copied into this repository.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

_LOADERS = {
    "SP500": "arch.data.sp500",
    "NASDAQ": "arch.data.nasdaq",
}
BUNDLED_SYMBOLS = tuple(_LOADERS)


@dataclass(frozen=True)
class Series:
    """One symbol's bars as aligned numpy arrays (oldest first): fast to slice per bar."""

    symbol: str
    ts: np.ndarray  # datetime64[s]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @staticmethod
    def from_frame(symbol: str, df: pd.DataFrame) -> "Series":
        cols = {c.lower(): c for c in df.columns}
        get = lambda name: df[cols[name]].to_numpy(dtype=float)  # noqa: E731
        return Series(
            symbol=symbol,
            ts=df.index.to_numpy(dtype="datetime64[s]"),
            open=get("open"),
            high=get("high"),
            low=get("low"),
            close=get("close"),
            volume=get("volume") if "volume" in cols else np.zeros(len(df)),
        )

    def __len__(self) -> int:
        return len(self.close)


@lru_cache(maxsize=None)
def load_bundled(symbol: str) -> Series:
    if symbol not in _LOADERS:
        raise KeyError(f"no bundled data for {symbol!r}; bundled: {', '.join(BUNDLED_SYMBOLS)}")
    import importlib

    df = importlib.import_module(_LOADERS[symbol]).load()
    return Series.from_frame(symbol, df)
