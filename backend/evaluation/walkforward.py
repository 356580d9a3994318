"""Walk-forward evaluation: train on a window of years, test on the next unseen window, roll by the test length.

Every window is scored and reported, and so is the aggregate (the test windows chained into one out-of-sample
track), never only the best window. The policy and the baselines run on the same bars with the same costs;
the DSR counts every configuration scored in the report (the policy and each baseline) as a trial.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from backend.domain.bars import Series
from backend.data.files import bars_per_year
from backend.evaluation import metrics
from backend.evaluation.baselines import baselines
from backend.evaluation.tracks import Track, chain, replay_track
from backend.rl.collapse import collapse_monitor

MAX_TURNOVER = 0.50  # seed 004: average daily turnover at most 50%
SHARPE_MARGIN = 0.5  # seed 004: RL Sharpe >= best equity buy-and-hold Sharpe - 0.5


@dataclass(frozen=True)
class Window:
    """Inclusive row indices into the shared calendar; test rows always come after training rows."""

    train_start: int
    train_end: int
    test_start: int
    test_end: int

    def describe(self, ts: np.ndarray) -> dict:
        d = lambda i: str(ts[i].astype("datetime64[D]"))  # noqa: E731
        return {"train": {"start": d(self.train_start), "end": d(self.train_end)},
                "test": {"start": d(self.test_start), "end": d(self.test_end)}}

    @property
    def track_rows(self) -> slice:
        """The rows a test track covers: every policy starts flat at the last training close and is marked at
        each test bar's close, so all its returns are out of sample."""
        return slice(self.test_start - 1, self.test_end + 1)


def windows(ts: np.ndarray, train_years: int, test_years: int) -> list[Window]:
    """Calendar-year windows: train [Y, Y + train_years), test [Y + train_years, Y + train_years + test_years),
    Y advancing by test_years from the first full year of data; only complete test windows are kept."""
    if train_years < 1 or test_years < 1:
        raise ValueError("train and test windows must be at least one year")
    years = ts.astype("datetime64[Y]").astype(int) + 1970
    first = int(years[0]) if ts[0].astype("datetime64[D]") <= np.datetime64(f"{years[0]}-01-05") else int(years[0]) + 1
    rows = lambda y: int(np.searchsorted(years, y))  # noqa: E731  first row of year y
    out, y = [], first
    while y + train_years + test_years - 1 <= int(years[-1]):
        test_end = rows(y + train_years + test_years) - 1
        out.append(Window(rows(y), rows(y + train_years) - 1, rows(y + train_years), test_end))
        y += test_years
    return out


Policy = Callable[[list[Series], Window], Track]


def score_tracks(tracks: dict[str, Track], policy: str, periods: int = metrics.YEAR) -> dict:
    """Metrics of every track, the policy's DSR (all tracks as trials), rank by Sharpe, log growth relative to
    the Kelly baseline's, and seed 004's pass criteria. `periods`: bars per year."""
    scores = {name: metrics.score(t.equity, t.exposure, t.turnover, periods) for name, t in tracks.items()}
    trial_sharpes = [metrics.per_period_sharpe(t.equity) for t in tracks.values()]
    for name, t in tracks.items():
        s = scores[name]
        s["deflated_sharpe"] = metrics.deflated_sharpe_of(metrics.returns(t.equity), trial_sharpes)
        kelly = scores["kelly"]["log_growth"]
        s["log_growth_vs_kelly"] = s["log_growth"] / kelly if abs(kelly) > 1e-12 else None
    order = sorted(scores, key=lambda n: scores[n]["sharpe"], reverse=True)
    for name in scores:
        scores[name]["rank"] = order.index(name) + 1
    p = scores[policy]
    best_equity = max(s["sharpe"] for n, s in scores.items() if n.startswith("buy_hold_"))
    criteria = {
        "sharpe_non_negative": p["sharpe"] >= 0,
        "sharpe_vs_best_buy_hold": p["sharpe"] >= best_equity - SHARPE_MARGIN,
        "turnover_at_most_50pct": p["turnover"] <= MAX_TURNOVER,
        "rank_in_top_half": p["rank"] <= math.ceil(len(scores) / 2),
    }
    return {"scores": scores, "criteria": criteria, "passed": all(criteria.values()), "entrants": len(scores)}


def walk_forward(policy_name: str, policy: Policy, series: list[Series], wins: list[Window], cost_rate: float,
                 seed: int = 7, on_window: Callable[[int, int], None] | None = None,
                 bars: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Runs every window; returns the JSON-able report and the tracks per window (for the plots). `bars`: the
    files `series` come from (none: the bundled indices), for the ATR rule's replay."""
    ts = series[0].ts
    periods = max(1, round(bars_per_year(ts)))  # 252-ish for daily bars
    closes = np.stack([s.close for s in series])
    symbols = [s.symbol for s in series]
    rows, all_tracks = [], []
    for i, w in enumerate(wins):
        test = w.track_rows
        atr = replay_track("atr", ts[test], seed=seed, bars=bars)
        tracks, f = baselines(symbols, closes[:, test], closes[:, w.train_start:w.train_end + 1], cost_rate, atr)
        tracks = {policy_name: policy(series, w), **tracks}
        row = {**w.describe(ts), "kelly_fraction": f, **score_tracks(tracks, policy_name, periods)}
        if tracks[policy_name].actions is not None:
            row["collapse"] = collapse_monitor(tracks[policy_name].actions, tracks[policy_name].turnover)
        rows.append(row)
        all_tracks.append(tracks)
        if on_window:
            on_window(i + 1, len(wins))
    chained = {name: chain([t[name] for t in all_tracks]) for name in all_tracks[0]}
    aggregate = score_tracks(chained, policy_name, periods)
    aggregate["windows_passing"] = {c: sum(r["criteria"][c] for r in rows) for c in aggregate["criteria"]}
    aggregate["windows"] = len(rows)
    sharpes = [r["scores"][policy_name]["sharpe"] for r in rows]
    aggregate["window_sharpe"] = {"mean": float(np.mean(sharpes)), "median": float(np.median(sharpes)),
                                  "min": float(np.min(sharpes)), "max": float(np.max(sharpes))}
    if chained[policy_name].actions is not None:
        aggregate["collapse"] = collapse_monitor(chained[policy_name].actions, chained[policy_name].turnover)
    report = {"policy": policy_name, "symbols": symbols, "cost_bps": cost_rate * 1e4, "windows": rows,
              "aggregate": aggregate}
    return report, {"windows": all_tracks, "chained": chained}
