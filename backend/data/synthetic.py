"""Generated markets with a known answer: bars of one symbol (SYN) and a schedule of BUY signals on them, whose
growth-optimal exposure is known from the parameters they were drawn with.

- coin: each trade gains +a or loses -a with probability p (a gap at the open of its second bar, inside the
  holding period; its stop is 1.5 a away, so it never changes the outcome) plus bar noise.
  f* = (2p - 1) a / (a^2 + noise variance).
- confidence: a signal's confidence c ~ U(0, 1); it is right with probability 0.4 + 0.3 c. The Kelly exposure per
  confidence bucket is known, 0 below the break-even c = 1/3.
- drift: log-normal daily returns (annual drift mu, volatility sigma), a BUY every 5 bars held 4 bars.
  f* = mu / sigma^2 (less costs).

Every signal enters the live engine at its bar (`Market.schedule`), as a signal posted to the API would.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np

from backend.domain.bars import Series
from backend.data.signals import ScheduledSignals, TimedSignal
from backend.domain.model import Side, Signal
from backend.domain.state import CONFIDENCE_BUCKETS, BucketEdges, confidence_bucket

SYMBOL = "SYN"
WARMUP = 200  # bars before the first signal: the indicators (ATR, ADX) need 140
BAR_NOISE = 0.002
COSTS = 2 * (2 + 1) / 1e4  # the simulator's default slippage and commission, both fills
GRID = np.round(np.arange(0, 8.0001, 0.01), 2)  # exposures the growth function is tabulated on
EDGES = BucketEdges()
# settings under which a sizing policy is measured on these markets: caps that allow every menu exposure up to 8x
# (a 10x account with a 10% maintenance margin, 50% risk at the stop), and no protection that would stop a run
WIDE_CAPS = dict(rm_max_leverage=8.0, rm_max_position_exposure=8.0, rm_max_exposure=8.0, rm_max_risk_pct=0.5,
                 rm_maintenance_margin=0.1, sim_multiplier=10.0)
PROTECTIONS_OFF = dict(rm_max_daily_loss_pct=None, rm_max_drawdown_pct=None, rm_loss_streak=None,
                       rm_max_trades_per_day=None)


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # coin | confidence | drift
    trades: int
    p: float = 0.5
    a: float = 0.0
    mu: float = 0.0  # drift: annual
    sigma: float = 0.0
    caps: str = "wide"  # how a benchmark caps it: wide (every exposure of the menu) or default (the shipped caps)

    @property
    def period(self) -> int:
        """Bars from one signal to the next: the trade holds period - 1 of them."""
        return 5 if self.kind == "drift" else 3

    def win_probability(self, confidence: float) -> float:
        return 0.4 + 0.3 * confidence if self.kind == "confidence" else self.p

    @property
    def t500(self) -> float | None:
        """The edge's t-statistic over 500 trades (the confidence case has one per bucket: None)."""
        if self.kind == "coin":
            mean = (2 * self.p - 1) * self.a
            var = self.a**2 - mean**2 + 2 * BAR_NOISE**2
        elif self.kind == "drift":
            mean = self.mu / 252 * (self.period - 1) - COSTS
            var = self.sigma**2 / 252 * (self.period - 1)
        else:
            return None
        return mean / math.sqrt(var) * math.sqrt(500)


def coin_case(f_star: float, t500: float, trades: int, caps: str = "wide") -> Case:
    """p and a such that, bar noise aside, the trade's Sharpe is t500 / sqrt(500) and (2p-1) a / a^2 = f*."""
    sharpe = t500 / math.sqrt(500)
    edge = sharpe / math.sqrt(1 + sharpe * sharpe)  # 2p - 1
    return Case(f"coin f*={f_star:g} t500={t500:g}" + (" default caps" if caps == "default" else ""), "coin", trades,
                p=(1 + edge) / 2, a=edge / f_star, caps=caps)


def bucket(confidence: float) -> str:
    return confidence_bucket(confidence, EDGES)


@dataclass(frozen=True)
class Market:
    series: Series
    timed: list[TimedSignal]  # the j-th at bar WARMUP + period x j
    confidences: list[float]

    @property
    def signals(self) -> list[Signal]:
        return [t.signal for t in self.timed]

    def schedule(self) -> ScheduledSignals:
        """The signal source for `run_replay`, with the simulated clock starting at bar WARMUP - 1."""
        return ScheduledSignals.schedule(self.timed, self.series.ts, [SYMBOL], WARMUP - 1)


def market(case: Case, seed: int) -> Market:
    """Each bar opens at the last close times a gap and moves by its own return to its close. A coin trade holds
    two bars: a quiet one, then one that opens with the gap +-a; its exit fills at the next open (= that close).
    A drift trade holds four bars of log-normal returns."""
    rng = np.random.default_rng(seed)
    n = WARMUP + case.period * case.trades + case.period
    daily = case.sigma / math.sqrt(252)
    if case.kind == "drift":
        intrabar = np.expm1(rng.normal(case.mu / 252 - daily**2 / 2, daily, n))
    else:
        intrabar = rng.normal(0, BAR_NOISE, n)
    gap = np.ones(n)
    confidences = (rng.random(case.trades) if case.kind == "confidence" else np.full(case.trades, 0.6)).tolist()
    if case.kind != "drift":
        for j, c in enumerate(confidences):
            gap[WARMUP + case.period * j + 2] += case.a if rng.random() < case.win_probability(c) else -case.a
    close = 100 * np.cumprod(gap * (1 + intrabar))
    open_ = np.concatenate([[100.0], close[:-1]]) * gap
    spread = np.abs(rng.normal(0, daily / 2 if case.kind == "drift" else BAR_NOISE, n))
    high = np.maximum(open_, close) * (1 + spread)
    low = np.minimum(open_, close) * (1 - spread)
    ts = np.datetime64("2001-01-01", "s") + np.arange(n) * np.timedelta64(1, "D")
    stop_distance = 1.5 * case.a if case.kind != "drift" else 6 * daily * math.sqrt(case.period - 1)
    bars = [WARMUP + case.period * j for j in range(case.trades)]
    timed = [TimedSignal(ts[i], Signal(f"{case.kind}-{seed}-{j}", SYMBOL, Side.BUY, round(c, 4),
                                       stop_price=float(close[i] * (1 - stop_distance)),
                                       time_limit_hours=24 * (case.period - 1)))
             for j, (i, c) in enumerate(zip(bars, confidences))]
    return Market(Series(SYMBOL, ts, open_, high, low, close, np.zeros(n)), timed, confidences)


@dataclass
class Truth:
    """The expected log growth per trade of every exposure on GRID (per confidence bucket), from a large sample of
    trades drawn as the market draws them, with the same costs and margin calls the agent reckons with."""

    growth: dict[str, np.ndarray]  # bucket ("all" unless by confidence) -> expected log growth on GRID
    f_star: dict[str, float]  # the formula's f*

    def oracle(self, key: str) -> float:
        """The best fixed exposure."""
        return float(GRID[int(np.argmax(self.growth[key]))])

    def at(self, key: str, exposure: float) -> float:
        return float(np.interp(exposure, GRID, self.growth[key]))


def truth(case: Case, maintenance: float, samples: int = 100_000) -> Truth:
    rng = np.random.default_rng(12345)
    daily = case.sigma / math.sqrt(252)
    confidence = rng.random(samples) if case.kind == "confidence" else np.full(samples, 0.6)
    p = np.vectorize(case.win_probability)(confidence)
    if case.kind == "drift":
        bars = np.expm1(rng.normal(case.mu / 252 - daily**2 / 2, daily, (samples, case.period - 1)))
        paths = np.cumprod(1 + bars, axis=1)
        exit_ratio = paths[:, -1]
        worst_ratio = np.minimum(paths.min(axis=1) * (1 - np.abs(rng.normal(0, daily / 2, samples))), 1.0)
    else:
        move = np.where(rng.random(samples) < p, case.a, -case.a)
        first = 1 + rng.normal(0, BAR_NOISE, samples)
        exit_ratio = first * (1 + move) * (1 + rng.normal(0, BAR_NOISE, samples))
        worst_ratio = np.minimum(np.minimum(first, exit_ratio), first * (1 + move)) * (1 - 0.8 * BAR_NOISE)
    keys = {"all": np.ones(samples, bool)}
    if case.kind == "confidence":
        labels = np.array([bucket(c) for c in confidence])
        keys = {b: labels == b for b in CONFIDENCE_BUCKETS}
    growth = {}
    for key, rows in keys.items():
        r, w = exit_ratio[rows] - 1 - COSTS, worst_ratio[rows] - 1
        e = GRID[:, None]
        liquidated = 1 + e * w < maintenance * e * (1 + w)
        ret = np.where(liquidated, w - COSTS, r)
        growth[key] = np.log(np.maximum(1 + e * ret, np.exp(-10))).mean(axis=1)
    noise = 2 * BAR_NOISE**2
    if case.kind == "drift":
        f_star = {"all": max(0.0, (case.mu / 252 * (case.period - 1) - COSTS) / (daily**2 * (case.period - 1)))}
    else:
        f_star = {k: max(0.0, (2 * float(p[rows].mean()) - 1) * case.a / (case.a**2 + noise))
                  for k, rows in keys.items()}
    return Truth(growth, f_star)


def named_case(name: str, trades: int) -> Case:
    """bench/sizing's cases by name: `coin:F:T` (f* = F, t500 = T), `coin:fair`, `coin:losing`, `confidence`
    (twice the signals), `drift:MU:SIGMA` (annual, e.g. drift:0.2:0.2)."""
    kind, *args = name.split(":")
    try:
        if kind == "coin" and args == ["fair"]:
            return Case("coin fair", "coin", trades, p=0.5, a=0.05)
        if kind == "coin" and args == ["losing"]:
            return Case("coin losing", "coin", trades, p=0.45, a=0.05)
        if kind == "coin" and len(args) == 2:
            return coin_case(float(args[0]), float(args[1]), trades)
        if kind == "confidence" and not args:
            return Case("confidence p=0.4+0.3c", "confidence", 2 * trades, a=0.08)
        if kind == "drift" and len(args) == 2:
            return Case(f"drift mu={args[0]} sigma={args[1]}", "drift", trades, mu=float(args[0]),
                        sigma=float(args[1]))
    except ValueError:
        pass
    raise ValueError(f"unknown generated market {name!r}: coin:F:T, coin:fair, coin:losing, confidence or "
                     "drift:MU:SIGMA")
