"""The policies `sizer evaluate` scores, each as a function (series, window) -> test Track.

A checkpoint is played as trained; `ppo` and `continuous` train a fresh sizing policy, `regime` a fresh GRU regime
trader, on each window's training bars (observation statistics from those bars only); `qlearning` and `atr` run
the live engine in replay.
"""
from __future__ import annotations

from datetime import date
from functools import partial
from pathlib import Path

import numpy as np

from backend.domain.bars import Series
from backend.evaluation.tracks import Track, regime_track, replay_track, sizing_track
from backend.evaluation.walkforward import Policy, Window
from backend.rl import checkpoint
from backend.rl.env import ContinuousSizingEnv, EnvConfig, MarketTensors, SizingEnv
from backend.rl.observation import ObservationSpec, fit_spec, market_features
from backend.rl.ppo import PPOConfig, train
from backend.rl.regime_env import RegimeEnv

TRAINABLE = {  # name -> (environment, how its test track is played, trainer settings)
    "ppo": (SizingEnv, sizing_track, {}),
    "continuous": (ContinuousSizingEnv, partial(sizing_track, env_type=ContinuousSizingEnv),
                   {"env": EnvConfig(min_trade_value=25.0)}),  # seed 003's $25 minimum trade
    "regime": (RegimeEnv, regime_track, {"gru": True}),
}
REPLAYED = ("qlearning", "atr")


def test_market(series: list[Series], w: Window, spec: ObservationSpec) -> MarketTensors:
    """The test bars with the observation window's history before the track's first bar (the last training
    close): the policy's first decision sees the same window it would see live."""
    ts = series[0].ts
    return MarketTensors.build(series, spec, start=ts[w.track_rows.start - spec.window + 1], end=ts[w.test_end])


def checkpoint_policy(path: Path) -> tuple[Policy, date]:
    """A trained checkpoint and the last bar it was trained on (from its metadata)."""
    loaded = checkpoint.load(path, kind="trading")
    try:
        train_end = date.fromisoformat(str(loaded.meta["data_window"]["train_end"]))
    except (KeyError, TypeError, ValueError):
        raise checkpoint.CheckpointError(f"{path} does not say when its training data ends (data_window.train_end)"
                                         ) from None
    act = checkpoint.greedy(loaded)

    def run(series: list[Series], w: Window) -> Track:
        spec = loaded.spec
        return sizing_track(act, test_market(series, w, spec), spec, loaded.env, start=spec.window - 1)

    return run, train_end


def replay_policy(name: str, seed: int, bars: tuple[str, ...] = ()) -> Policy:
    """`bars`: the files the series come from (none: the bundled indices), for the replay's simulator."""
    def run(series: list[Series], w: Window) -> Track:
        ts = series[0].ts
        train = ts[w.train_start:w.train_end + 1] if name == "qlearning" else None
        return replay_track(name, ts[w.track_rows], train=train, seed=seed, bars=bars)

    return run


def small_ppo(steps: int, seed: int, **overrides) -> PPOConfig:
    """A CPU-sized trainer configuration for one walk-forward window."""
    return PPOConfig(seed=seed, total_timesteps=steps, n_envs=64, n_steps=64, n_minibatches=4, hidden=64,
                     device="cpu", **overrides)


def trained_policy(kind: str, steps: int, seed: int, window: int = 32) -> Policy:
    """`ppo`: the discrete sizing environment; `continuous`: its Box(-1, 1) variant, trained by the same PPO
    with a Gaussian head; `regime`: the multi-asset regime environment with a GRU policy."""
    env_type, play, settings = TRAINABLE[kind]
    config = small_ppo(steps, seed, **settings)

    def run(series: list[Series], w: Window) -> Track:
        ts = series[0].ts
        rows = slice(w.train_start, w.train_end + 1)
        spec = fit_spec(np.concatenate([market_features(s.open, s.high, s.low, s.close, s.volume)[rows]
                                        for s in series]), window)
        market = MarketTensors.build(series, spec, start=ts[w.train_start], end=ts[w.train_end])
        agent, _ = train(config, env_type(market, spec, config.env, config.n_envs, seed=seed))
        agent.eval()
        return play(agent.greedy, test_market(series, w, spec), spec, config.env, spec.window - 1)

    return run
