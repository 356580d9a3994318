"""A symbol's bars, the type every layer passes them in (brokers, data files, environments, evaluation)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


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
