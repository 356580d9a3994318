"""Tracks: what every scored policy and baseline produces on one test window's bars, so one function scores all.

A track holds the account value at each close of the window's bars (normalised to 1 at the first close,
where every policy starts flat), and per bar the exposure held (gross position / equity), the turnover
(traded value / equity) and the decision labels (one column per traded series).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from backend.rl.env import EnvConfig, MarketTensors, SizingEnv
from backend.rl.observation import ObservationSpec
from backend.rl.regime_env import RegimeEnv, portfolio_step


@dataclass(frozen=True)
class Track:
    equity: np.ndarray  # (n,) at each close, equity[0] == 1
    exposure: np.ndarray  # (n - 1,)
    turnover: np.ndarray  # (n - 1,)
    actions: np.ndarray | None = None  # (n - 1, k) decision labels, None for a fixed rule
    sizes: np.ndarray | None = None  # (m, 4) per signal sized: bar index, confidence, exposure, leverage (NaN: none)

    def __post_init__(self) -> None:
        if not len(self.exposure) == len(self.turnover) == len(self.equity) - 1:
            raise ValueError("a track needs one exposure and turnover value per bar after the first")


def chain(tracks: list[Track]) -> Track:
    """Consecutive windows as one track: each window starts where the previous one ended."""
    equity, level = [np.ones(1)], 1.0
    for t in tracks:
        equity.append(level * t.equity[1:] / t.equity[0])
        level = float(equity[-1][-1])
    actions, sizes = [t.actions for t in tracks], [t.sizes for t in tracks]
    starts = np.cumsum([0] + [len(t.exposure) for t in tracks])
    return Track(np.concatenate(equity), np.concatenate([t.exposure for t in tracks]),
                 np.concatenate([t.turnover for t in tracks]),
                 None if any(a is None for a in actions) else np.concatenate(actions),
                 None if any(z is None for z in sizes) else
                 np.concatenate([z + [start, 0, 0, 0] for z, start in zip(sizes, starts)]))


def weights_track(close: np.ndarray, target: np.ndarray, cost_rate: float) -> Track:
    """A constant-weight portfolio over closes (S, n), rebalanced to `target` (S,) every close; it starts in
    cash, so the first bar pays for buying in."""
    r = close[:, 1:].T / close[:, :-1].T - 1  # (n - 1, S)
    held = np.zeros_like(target)
    equity, exposure, turnover = [1.0], [], []
    for rt in r:
        growth, held, traded = portfolio_step(held, target, rt, cost_rate)
        equity.append(equity[-1] * float(growth))
        exposure.append(float(np.abs(target).sum()))
        turnover.append(float(traded))
    return Track(np.asarray(equity), np.asarray(exposure), np.asarray(turnover))


Act = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def sizing_track(act: Act, market: MarketTensors, spec: ObservationSpec, cfg: EnvConfig, start: int,
                 env_type: type[SizingEnv] = SizingEnv) -> Track:
    """A sizing policy plays every series of `market` from bar `start` (its first decision, after that
    bar's close) to the last bar, each series with an equal share of the capital, no ruin stop."""
    n_series, n_bars = market.close.shape[0], market.close.shape[1] - 1 - start
    env = env_type(market, spec, replace(cfg, episode_bars=n_bars, ruin_pct=0.0), n_series, auto_reset=False)
    return _play(act, env, env.reset(starts=torch.full((n_series,), start), series=torch.arange(n_series)), n_bars)


@torch.no_grad()
def regime_track(act: Act, market: MarketTensors, spec: ObservationSpec, cfg: EnvConfig, start: int) -> Track:
    """The regime policy holds the series of `market` in one account from bar `start` (its first decision,
    after that bar's close) to the last bar, no ruin stop."""
    n_bars = market.close.shape[1] - 1 - start
    env = RegimeEnv(market, spec, replace(cfg, episode_bars=n_bars, ruin_pct=0.0), 1, auto_reset=False)
    return _play(act, env, env.reset(starts=torch.tensor([start])), n_bars)


def _play(act: Act, env: SizingEnv | RegimeEnv, first: tuple[torch.Tensor, torch.Tensor], n_bars: int) -> Track:
    """Runs a freshly reset environment for n_bars; exposure is what is held coming into each decision."""
    obs, mask = first
    capital = float(env.account.sum())
    equity, exposure, turnover, actions = [1.0], [], [], []
    for _ in range(n_bars):
        action = act(obs, mask)
        account = float(env.account.sum())
        exposure.append(float(env.position_value().abs().sum()) / account)
        actions.append(env.action_labels(action))
        obs, mask, _, _, _, info = env.step(action)
        turnover.append(float(info["traded"].sum()) / account)
        equity.append(float(env.account.sum()) / capital)
    return Track(np.asarray(equity), np.asarray(exposure), np.asarray(turnover), np.asarray(actions))


def replay_track(policy: str, calendar: np.ndarray, train: np.ndarray | None = None, seed: int = 7,
                 bars: tuple[str, ...] = ()) -> Track:
    """The live engine in replay (`sizer replay`'s loop, its signal source and the simulated broker's costs)
    with the Q-learning agent or the ATR rule sizing. With `train`, the agent first learns over the training
    window's dates in the same scratch database; in the test window it keeps learning online, as it does live.
    `calendar`: the dates of the track's bars, which the replay covers exactly; `bars`: bar files (SIM_BARS)
    instead of the bundled indices."""
    from backend.backtest import read_run
    from backend.config import load_settings
    from backend.data.files import load_market
    from backend.indicators import history_bars
    from backend.replay import run_replay

    with tempfile.TemporaryDirectory() as scratch:
        base = load_settings(broker="sim", sizing_policy=policy, database_url=f"sqlite:///{scratch}/replay.db",
                             rl_sizing_seed=seed, sim_bars=bars)
        if train is not None:  # the first bars of the data only warm the indicators up
            first = next(iter(load_market(base.sim.bars, base.sim.symbols).values())).ts[history_bars(base.risk.atr_period)]
            train = train[train >= first]
        for dates in ([train] if train is not None and len(train) > 1 else []) + [calendar]:
            day = lambda i: dates[i].astype("datetime64[D]").item()  # noqa: E731
            curve = run_replay(base.replace(sim_start=day(0)), day(-1)).curve
        rows, confidence, _ = read_run(base.service.database_url, policy)
    if not np.array_equal(curve.dates, calendar.astype("datetime64[D]")):
        raise ValueError(f"the replay's bars {curve.dates[0]}..{curve.dates[-1]} ({len(curve.dates)}) differ from "
                         f"the window's {calendar[0]}..{calendar[-1]} ({len(calendar)})")
    labels = np.where(curve.turnover > 0, "TRADE", np.where(curve.exposure > 0, "IN_POSITION", "FLAT"))
    days = curve.dates[:-1]
    sizes = [(np.searchsorted(days, on), confidence[r["signal_id"]], r["exposure"] or 0.0,
              np.nan if r["leverage"] is None else r["leverage"])
             for r in rows if r["decided_at"] is not None
             and days[0] <= (on := np.datetime64(str(r["decided_at"])[:10])) <= days[-1]]
    return Track(curve.equity / curve.equity[0], curve.exposure, curve.turnover, labels[:, None],
                 np.array(sizes, dtype=float).reshape(-1, 4))
