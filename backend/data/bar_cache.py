"""`sizer data fetch`: historical bars from a data provider (BarHistory: Alpaca's data API) into a local Parquet
cache, incrementally.

One file per symbol and timeframe, `<cache>/<SYMBOL>-<timeframe>.parquet` (a / in a crypto pair becomes _), with
the columns `backend.data.files.load_bars` reads (timestamp in UTC, open, high, low, close, volume). A second
fetch asks only for the bars after the last one cached; the files feed `--bars` and `SIM_BARS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from backend.brokers.base import BarHistory
from backend.domain.bars import Series
from backend.data.files import load_bars


@dataclass(frozen=True)
class Fetched:
    symbol: str
    path: Path
    added: int  # bars new to the cache
    total: int


def cache_path(cache: Path, symbol: str, timeframe: str) -> Path:
    return cache / f"{symbol.replace('/', '_')}-{timeframe}.parquet"


def fetch(source: BarHistory, symbols: list[str], timeframe: str, start: datetime, cache: Path) -> list[Fetched]:
    """Completed bars of each symbol from `start` (or after its last cached bar) to now, added to its file.
    ValueError: a symbol with no bars at all (the files of the symbols before it are written)."""
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for symbol in symbols:
        path = cache_path(cache, symbol, timeframe)
        old = load_bars(path, symbol) if path.exists() else None
        since = start if old is None else max(
            start, old.ts[-1].astype(datetime).replace(tzinfo=timezone.utc) + timedelta(seconds=1))
        new = source.bars(symbol, timeframe, since)
        if old is None and len(new) == 0:
            raise ValueError(f"no {timeframe} bars of {symbol} since {start:%Y-%m-%d}; nothing written")
        merged = new if old is None else _merge(old, new)
        _write(path, merged)
        out.append(Fetched(symbol, path, len(merged) - (0 if old is None else len(old)), len(merged)))
    return out


def _merge(old: Series, new: Series) -> Series:
    keep = ~np.isin(old.ts, new.ts)  # a bar fetched again replaces the cached one
    ts = np.concatenate([old.ts[keep], new.ts])
    order = np.argsort(ts, kind="stable")
    columns = [np.concatenate([getattr(old, c)[keep], getattr(new, c)])[order]
               for c in ("open", "high", "low", "close", "volume")]
    return Series(old.symbol, ts[order], *columns)


def _write(path: Path, s: Series) -> None:
    frame = pd.DataFrame({"timestamp": pd.to_datetime(s.ts).tz_localize("UTC"), "open": s.open, "high": s.high,
                          "low": s.low, "close": s.close, "volume": s.volume})
    tmp = path.with_suffix(".tmp.parquet")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)  # a fetch that dies half-way leaves the last good file
