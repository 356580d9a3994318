"""The Box(-1, 1) sizing environment (seed 003) and its Gaussian PPO, on small synthetic and real data."""
import numpy as np
import pytest
import torch

from backend.rl.env import BUY_75, HOLD, SELL_25, ContinuousSizingEnv, EnvConfig, MarketTensors
from backend.rl.observation import fit_spec, market_features
from backend.rl.ppo import PPOConfig, train
from tests.unit.test_env import series, walk

BASE = 1000 * 0.7 * 0.15  # a 100% action: base_alloc of the account after the safety buffer


def make(close, n=1, **cfg) -> ContinuousSizingEnv:
    s = series(np.asarray(close, float))
    spec = fit_spec(market_features(s.open, s.high, s.low, s.close, s.volume), window=8)
    return ContinuousSizingEnv(MarketTensors.build([s], spec), spec, EnvConfig(commission_bps=0, slippage_bps=0,
                                                                                **cfg), n_envs=n, seed=0)


def step(env, *actions):
    return env.step(torch.tensor(actions, dtype=torch.float32))


def test_shapes_mask_and_hold_zone():
    env = make(np.full(300, 100.0), n=3, smoothing_window=1)
    obs, mask = env.reset()
    assert obs.shape == (3, env.spec.size) and mask.shape == (3, 1) and mask.all()
    step(env, 0.05, -0.1, 0.5)
    assert env.units[0] == 0 and env.units[1] == 0  # within +-0.1: HOLD
    assert float(env.units[2] * 100) == pytest.approx(0.5 * BASE, rel=1e-5)  # BUY half the base allocation


def test_the_observation_shows_the_earlier_actions_the_smoothing_mixes_in():
    env = make(np.full(300, 100.0), n=2, smoothing_window=3)
    obs, _ = env.reset()
    assert obs.shape == (2, env.spec.size) and env.spec.account_features[-2:] == ("action_lag_2", "action_lag_1")
    assert obs[:, -2:].abs().sum() == 0
    step(env, 0.9, -0.4)
    obs, *_ = step(env, 0.2, 0.3)
    assert torch.allclose(obs[:, -2:], torch.tensor([[0.9, 0.2], [-0.4, 0.3]]))


def test_smoothing_and_minimum_trade_value():
    env = make(np.full(300, 100.0), n=2, smoothing_window=3, min_trade_value=25.0)
    env.reset()
    _, _, _, _, _, info = step(env, 0.9, 0.6)  # played: mean(0, 0, 0.9) = 0.3 and mean(0, 0, 0.6) = 0.2
    assert float(info["traded"][0]) == pytest.approx(0.3 * BASE, rel=1e-5)  # $31.5
    assert float(info["traded"][1]) == 0.0  # $21 is under the $25 minimum: skipped


def test_sell_is_proportional_to_the_position_and_reward_is_the_account_change():
    close = np.concatenate([np.full(150, 100.0), np.full(150, 110.0)])
    env = make(close, smoothing_window=1)
    env.reset(starts=torch.tensor([140]))
    step(env, 1.0)
    position = float(env.position_value())
    _, _, _, _, _, info = step(env, -0.5)
    assert float(info["traded"][0]) == pytest.approx(0.5 * position, rel=1e-5)
    before = float(env.account)
    for _ in range(10):  # hold through the jump to 110 at bar 150
        _, _, reward, _, _, _ = step(env, 0.0)
        if float(env.account) != before:
            break
    assert float(reward) == pytest.approx(float(env.account) / before - 1, rel=1e-5)
    assert float(env.account) == pytest.approx(1000 + 0.5 * BASE * 0.1, rel=1e-5)  # half the $105 gained 10%


def test_action_classes_for_the_collapse_monitor():
    env = make(np.full(300, 100.0))
    got = env.action_class(torch.tensor([0.0, 0.09, 0.95, 2.0, -0.2]))
    assert got.tolist() == [HOLD, HOLD, BUY_75, BUY_75, SELL_25]


def test_gaussian_ppo_trains_with_finite_losses_and_the_collapse_monitor_reports():
    torch.set_num_threads(1)
    s = series(walk(600, seed=3))
    spec = fit_spec(market_features(s.open, s.high, s.low, s.close, s.volume), window=8)
    cfg = PPOConfig(total_timesteps=4 * 32 * 32, n_envs=32, n_steps=32, n_minibatches=4, update_epochs=2,
                    hidden=32, env=EnvConfig(episode_bars=64))
    env = ContinuousSizingEnv(MarketTensors.build([s], spec), spec, cfg.env, cfg.n_envs, seed=1)
    agent, history = train(cfg, env)
    for row in history:
        for name in ("losses/policy_loss", "losses/value_loss", "losses/entropy", "collapse/dominance",
                     "collapse/action_entropy", "collapse/repeats", "collapse/trade_frequency"):
            assert np.isfinite(row[name]), name
        assert sum(row[f"actions/{i}"] for i in range(7)) == 32 * 32
    assert history[-1]["collapse/trade_frequency"] > 0  # a fresh Gaussian policy explores: it trades
    assert agent.continuous and agent.actor_logstd.shape == (1,)
    obs, mask = env.reset()
    greedy = agent.greedy(obs, mask)
    assert greedy.shape == (32,) and bool((greedy.abs() <= 1).all())
