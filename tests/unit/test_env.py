import numpy as np
import pytest
import torch

from backend.domain.bars import Series
from backend.rl.env import (
    BUY_50,
    BUY_75,
    HOLD,
    SELL_25,
    EnvConfig,
    MarketTensors,
    SizingEnv,
    action_mask,
)
from backend.rl.observation import fit_spec, market_features


def series(close: np.ndarray, open_: np.ndarray | None = None) -> Series:
    open_ = close if open_ is None else open_
    ts = np.datetime64("2000-01-01", "s") + np.arange(len(close)) * np.timedelta64(1, "D")
    return Series("X", ts, open_, np.maximum(open_, close) * 1.01, np.minimum(open_, close) * 0.99, close,
                  np.ones(len(close)))


def make_env(close, open_=None, n=4, **cfg) -> SizingEnv:
    s = series(np.asarray(close, float), None if open_ is None else np.asarray(open_, float))
    spec = fit_spec(market_features(s.open, s.high, s.low, s.close, s.volume), window=8)
    return SizingEnv(MarketTensors.build([s], spec), spec, EnvConfig(**cfg), n_envs=n, seed=0)


def walk(n=400, seed=0):
    return 100 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.01, n)))


def test_shapes_and_first_masks():
    env = make_env(walk())
    obs, mask = env.reset()
    assert obs.shape == (4, env.spec.size) and obs.dtype == torch.float32
    # flat, no shorting: nothing to sell; plenty of cash: every buy allowed
    assert mask.tolist() == [[True, True, True, True, False, False, False]] * 4


def test_buy_fills_at_the_next_open_with_costs_and_reward_is_the_account_change():
    close = walk()
    opens = close * 1.002
    env = make_env(close, opens, n=1, commission_bps=10, slippage_bps=20)
    env.reset()
    t, acct = int(env.t), float(env.account)
    _, _, reward, _, _, _ = env.step(torch.tensor([BUY_50]))
    dollars = 1000 * 0.7 * 0.15 * 0.5
    fill = opens[t + 1] * 1.002
    units = dollars / opens[t + 1]
    cash = 1000 - units * fill * (1 + 0.001)
    expected = cash + units * close[t + 1]
    assert float(env.account) == pytest.approx(expected, rel=1e-5)
    assert float(reward) == pytest.approx(expected / acct - 1, rel=1e-4)


def test_scale_in_stops_at_the_position_cap_and_then_buys_are_masked():
    env = make_env(np.full(400, 100.0), n=2)
    env.reset()
    for _ in range(6):
        _, mask, _, _, _, info = env.step(torch.tensor([BUY_75, BUY_75]))
    pct = env.position_value() / env.account
    assert torch.all((pct - 0.2).abs() < 1e-3)  # at the cap (costs move the account a hair)
    assert not mask[:, 1:4].any() and mask[:, SELL_25].all()  # at the cap: no buy, but reducing is allowed


def test_invalid_actions_become_hold_and_are_reported():
    env = make_env(walk(), n=3)
    env.reset()
    _, _, _, _, _, info = env.step(torch.tensor([SELL_25, HOLD, BUY_50]))  # nothing to sell while flat
    assert info["invalid"].tolist() == [True, False, False]
    assert env.units[0] == 0 and env.units[2] > 0


def test_ruin_and_window_end_finish_episodes_and_they_restart():
    crash = np.concatenate([np.full(200, 100.0), np.full(200, 1.0)])
    env = make_env(crash, n=64, max_position_pct=1.0, base_alloc=1.0, safety_buffer_pct=0.0, episode_bars=500)
    env.reset()
    ruined = cut = 0
    for _ in range(400):
        _, _, _, terminated, truncated, info = env.step(torch.full((64,), BUY_75))
        assert not (terminated & truncated).any()
        if (terminated | truncated).any():
            assert (info["final_account"] >= 0).all()
            assert info["final_obs"].shape == (int((terminated | truncated).sum()), env.spec.size)
            assert (info["final_account"][terminated[terminated | truncated]] < 500).all()  # ruin is terminal
        ruined += int(terminated.sum())
        cut += int(truncated.sum())
    assert ruined > 0 and cut > 0  # both ends happen, and every finished environment restarted
    assert torch.all(env.account == env.cash + env.units * env.market.close[0, env.t])


def test_log_growth_reward_is_the_log_of_the_account_ratio():
    env = make_env(walk(), n=2, reward="log_growth")
    env.reset()
    env.step(torch.tensor([BUY_75, BUY_75]))
    before = env.account.clone()
    _, _, reward, terminated, truncated, _ = env.step(torch.tensor([HOLD, HOLD]))
    ok = ~(terminated | truncated)
    assert torch.allclose(reward[ok], torch.log(env.account[ok] / before[ok]), atol=1e-6)


def test_action_mask_without_cash_and_with_shorting():
    cfg = EnvConfig()
    acct = torch.tensor([1000.0, 1000.0])
    mask = action_mask(torch.tensor([0.0, 0.0]), acct, torch.tensor([0.0, 500.0]), cfg)
    assert not mask[0, 1:4].any() and mask[1, 1:4].all()  # no cash, no buy
    short = action_mask(torch.tensor([0.0]), torch.tensor([1000.0]), torch.tensor([500.0]),
                        EnvConfig(allow_short=True))
    assert short[0, 4:].all()


def test_without_auto_reset_a_finished_episode_keeps_its_terminal_state():
    env = make_env(walk(), n=1, episode_bars=3)
    env.auto_reset = False
    obs, _ = env.reset()
    for _ in range(3):
        obs, _, _, terminated, truncated, info = env.step(torch.tensor([HOLD]))
    assert truncated.item() and not terminated.item()
    assert torch.equal(info["final_obs"], obs) and int(env.t) == int(env.end)
