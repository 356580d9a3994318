"""Real daily bars bundled with the `arch` package: S&P 500 and NASDAQ Composite, 1999-2018.

They are read from the installed package on demand, never copied into this repository.
"""
from __future__ import annotations

from functools import lru_cache

from backend.domain.bars import Series

_LOADERS = {
    "SP500": "arch.data.sp500",
    "NASDAQ": "arch.data.nasdaq",
}
BUNDLED_SYMBOLS = tuple(_LOADERS)


@lru_cache(maxsize=None)
def load_bundled(symbol: str) -> Series:
    if symbol not in _LOADERS:
        raise KeyError(f"no bundled data for {symbol!r}; bundled: {', '.join(BUNDLED_SYMBOLS)}")
    import importlib

    df = importlib.import_module(_LOADERS[symbol]).load()
    return Series.from_frame(symbol, df)
