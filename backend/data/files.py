"""Bars from the user's files: CSV or Parquet, one file per symbol, daily or intraday.

A file has a date or timestamp column (`timestamp`, `datetime`, `date` or `time`, any case) and `open`, `high`,
`low`, `close`; `volume` is optional. Timestamps without a zone are read as UTC; numbers as seconds (or
milliseconds) since 1970. On load every rule is checked (ordered, unique timestamps; finite, positive prices;
high >= max(open, close) >= min(open, close) >= low; volume finite and not negative), and a file that breaks one
stops with the file, the row and the column.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from backend.data.bundled import load_bundled
from backend.domain.bars import Series

log = logging.getLogger(__name__)

TIME_COLUMNS = ("timestamp", "datetime", "date", "time")
PRICE_COLUMNS = ("open", "high", "low", "close")
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class BarsFileError(ValueError):
    """A bars file sizer cannot use; the message names the file and, where one is at fault, the row and column."""

    def __init__(self, path: Path | str, message: str, row: int | None = None, column: str | None = None) -> None:
        where = [f"row {row}"] if row is not None else []
        where += [f"column {column!r}"] if column else []
        super().__init__(f"{path}: {', '.join(where) + ': ' if where else ''}{message}")


def parse_bars_spec(spec: str) -> tuple[str, Path]:
    """`SYMBOL=PATH`, or `PATH` whose file name (without its extension) is the symbol."""
    symbol, sep, path = spec.partition("=")
    if not sep:
        path, symbol = spec, Path(spec).name.split(".")[0]
    symbol = symbol.strip().upper()
    if not symbol or not path:
        raise BarsFileError(spec, "expected SYMBOL=PATH or a path whose file name is the symbol")
    return symbol, Path(path)


def _read(path: Path) -> pd.DataFrame:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise BarsFileError(path, f"unknown file type {path.suffix!r}: expected {', '.join(SUFFIXES)}")
    try:
        return pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except FileNotFoundError:
        raise BarsFileError(path, "no such file") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise BarsFileError(path, f"cannot be read: {exc}") from None


def _timestamps(path: Path, raw: pd.Series, column: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(raw):
        unit = "ms" if raw.abs().max() > 1e11 else "s"
        parsed = pd.to_datetime(raw, unit=unit, utc=True, errors="coerce")
    else:
        parsed = pd.to_datetime(raw.astype(str), utc=True, errors="coerce", format="mixed")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        raise BarsFileError(path, f"{raw.iloc[bad[0]]!r} is not a date or timestamp", row=int(bad[0]) + 1,
                            column=column)
    return parsed.dt.tz_convert(None).to_numpy(dtype="datetime64[s]")


def load_bars(path: Path | str, symbol: str) -> Series:
    """One symbol's bars from a CSV or Parquet file, checked. Rows are counted from 1 (a CSV's header is not a
    row)."""
    path = Path(path)
    df = _read(path)
    columns = {str(c).strip().lower(): c for c in df.columns}
    time_column = next((c for c in TIME_COLUMNS if c in columns), None)
    if time_column is None:
        raise BarsFileError(path, f"no date or timestamp column (one of {', '.join(TIME_COLUMNS)}); it has "
                                  f"{', '.join(map(str, df.columns)) or 'none'}")
    missing = [c for c in PRICE_COLUMNS if c not in columns]
    if missing:
        raise BarsFileError(path, f"missing column(s) {', '.join(missing)}")
    if len(df) < 2:
        raise BarsFileError(path, f"{len(df)} bar(s): at least 2 are needed")
    ts = _timestamps(path, df[columns[time_column]], columns[time_column])
    values = {}
    for name in PRICE_COLUMNS + (("volume",) if "volume" in columns else ()):
        numbers = pd.to_numeric(df[columns[name]], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(numbers) & (numbers >= 0 if name == "volume" else numbers > 0)
        if not ok.all():
            row = int(np.flatnonzero(~ok)[0])
            rule = "a finite number, not negative" if name == "volume" else "a finite positive price"
            raise BarsFileError(path, f"{df[columns[name]].iloc[row]!r} is not {rule}", row=row + 1,
                                column=columns[name])
        values[name] = numbers
    step = np.diff(ts).astype(np.int64)
    if (step <= 0).any():
        row = int(np.flatnonzero(step <= 0)[0]) + 2
        what = "repeats" if step[row - 2] == 0 else "comes before"
        raise BarsFileError(path, f"timestamp {ts[row - 1]} {what} the one of row {row - 1}: timestamps must "
                                  "increase", row=row, column=columns[time_column])
    o, h, lo, c = (values[n] for n in PRICE_COLUMNS)
    for name, broken in (("high", h < np.maximum(o, c)), ("low", lo > np.minimum(o, c))):
        if broken.any():
            row = int(np.flatnonzero(broken)[0])
            rule = "at least the open and the close" if name == "high" else "at most the open and the close"
            raise BarsFileError(path, f"{name} {values[name][row]:g} is not {rule} ({o[row]:g}, {c[row]:g})",
                                row=row + 1, column=columns[name])
    return Series(symbol, ts, o, h, lo, c, values.get("volume", np.zeros(len(ts))))


def bars_per_year(ts: np.ndarray) -> float:
    """How many bars a year of this series holds, as observed (daily stock bars about 252, 24/7 hourly about
    8,766): what returns are annualised with."""
    years = (ts[-1] - ts[0]).astype("timedelta64[s]").astype(float) / (365.25 * 86400)
    return (len(ts) - 1) / years


def on_shared_calendar(series: dict[str, Series]) -> dict[str, Series]:
    """Each series on the timestamps every one of them has: the simulator steps through one calendar."""
    shared = None
    for s in series.values():
        shared = s.ts if shared is None else np.intersect1d(shared, s.ts)
    if len(shared) < 2:
        raise BarsFileError(", ".join(series), "the files share fewer than 2 timestamps")
    out = {}
    for symbol, s in series.items():
        keep = np.isin(s.ts, shared)
        out[symbol] = Series(symbol, s.ts[keep], s.open[keep], s.high[keep], s.low[keep], s.close[keep],
                             s.volume[keep])
    return out


def load_market(bar_files: Sequence[str], bundled: Sequence[str]) -> dict[str, Series]:
    """The bars every part of sizer replays, trains and evaluates on: the files (each SYMBOL=PATH or PATH) on the
    timestamps they all share, or, without files, the bundled series. BarsFileError names a file at fault."""
    if not bar_files:
        return {symbol: load_bundled(symbol) for symbol in bundled}
    series = {}
    for spec in bar_files:
        symbol, path = parse_bars_spec(spec)
        if symbol in series:
            raise BarsFileError(path, f"a second file for {symbol}")
        series[symbol] = load_bars(path, symbol)
    aligned = on_shared_calendar(series)
    for symbol, s in series.items():
        if len(s) != len(aligned[symbol]):
            log.warning("%s: %d of its %d bars fall on timestamps another file lacks; they are left out",
                        symbol, len(s) - len(aligned[symbol]), len(s))
    return aligned
