"""Signals from the user's files, each entering the live engine at its time.

A CSV with `timestamp`, `symbol`, `side` (buy or sell), `confidence` (0..1) and, optionally, `signal_id`,
`stop_price`, `target_price`, `time_limit_hours` (any case). A signal is handled when the clock shows the latest
bar at or before its timestamp (a daily signal dated 2024-01-03 is decided on that day's close and fills at the
next bar's open), as if it had been posted to the API then. A bad row stops the load with the file, the row and
the column; signals the bars cannot take (an unknown symbol, a time outside the bars) are counted with the reason.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from backend.domain.model import Side, Signal

REQUIRED = ("timestamp", "symbol", "side", "confidence")
OPTIONAL = ("signal_id", "stop_price", "target_price", "time_limit_hours")


class SignalsFileError(ValueError):
    def __init__(self, path: Path | str, message: str, row: int | None = None, column: str | None = None) -> None:
        where = [f"row {row}"] if row is not None else []
        where += [f"column {column!r}"] if column else []
        super().__init__(f"{path}: {', '.join(where) + ': ' if where else ''}{message}")


@dataclass(frozen=True)
class TimedSignal:
    at: np.datetime64  # UTC, seconds
    signal: Signal


def load_signals(path: Path | str) -> list[TimedSignal]:
    """Every row of the file as a signal, in time order (rows are counted from 1; the header is not a row)."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise SignalsFileError(path, "no such file") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise SignalsFileError(path, f"cannot be read: {exc}") from None
    columns = {str(c).strip().lower(): c for c in df.columns}
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise SignalsFileError(path, f"missing column(s) {', '.join(missing)}")
    out, seen = [], set()
    for i, row in enumerate(df.itertuples(index=False), 1):
        value = {name: str(row[df.columns.get_loc(columns[name])]).strip() for name in REQUIRED + OPTIONAL
                 if name in columns}

        def fail(name: str, message: str):
            raise SignalsFileError(path, f"{value.get(name)!r} {message}", row=i, column=columns[name])

        at = pd.to_datetime(value["timestamp"], utc=True, errors="coerce")
        if pd.isna(at):
            fail("timestamp", "is not a date or timestamp")
        side = value["side"].lower()
        if side not in ("buy", "sell"):
            fail("side", "is not buy or sell")
        confidence = _number(value["confidence"])
        if confidence is None or not 0 <= confidence <= 1:
            fail("confidence", "is not a number from 0 to 1")
        prices = {}
        for name in ("stop_price", "target_price", "time_limit_hours"):
            if value.get(name, "") == "":
                prices[name] = None
                continue
            prices[name] = _number(value[name])
            if prices[name] is None or prices[name] <= 0:
                fail(name, "is not a positive number")
        signal_id = value.get("signal_id") or f"{path.stem}-{i}"
        if signal_id in seen:
            fail("signal_id", "repeats an earlier row's id")
        seen.add(signal_id)
        if not value["symbol"]:
            fail("symbol", "is empty")
        out.append(TimedSignal(np.datetime64(at.tz_convert(None), "s"),
                               Signal(signal_id, value["symbol"].upper(), Side(side), confidence, **prices)))
    return sorted(out, key=lambda s: s.at)


def _number(text: str) -> float | None:
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


@dataclass
class ScheduledSignals:
    """A signal source for `run_replay`: each signal at the bar it belongs to. `unused` counts, by reason, the
    signals the bars cannot take."""

    by_bar: dict[int, list[Signal]] = field(default_factory=dict)
    unused: dict[str, list[str]] = field(default_factory=dict)

    @staticmethod
    def schedule(signals: Iterable[TimedSignal], calendar: np.ndarray, symbols: Iterable[str],
                 first_bar: int) -> "ScheduledSignals":
        """`calendar`: the bars' timestamps; `first_bar`: the first the clock shows (after the warm-up)."""
        known = set(symbols)
        out = ScheduledSignals()
        for timed in signals:
            bar = int(np.searchsorted(calendar, timed.at, side="right")) - 1
            reason = ("unknown symbol" if timed.signal.symbol not in known else
                      "before the first bar" if bar < first_bar else
                      "at or after the last bar" if bar >= len(calendar) - 1 else None)
            if reason:
                out.unused.setdefault(reason, []).append(timed.signal.signal_id)
            else:
                out.by_bar.setdefault(bar, []).append(timed.signal)
        return out

    @property
    def used(self) -> int:
        return sum(len(s) for s in self.by_bar.values())

    def __call__(self, service) -> list[Signal]:
        return self.by_bar.get(service.broker.index, [])
