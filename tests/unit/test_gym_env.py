"""The gymnasium view of the sizing environment: the gymnasium and SB3 checkers, MaskablePPO on it, masks,
seeding and the terminal-observation contract. Small data (600 SP500 bars, window 16) keeps it fast."""
import warnings

import numpy as np
import pytest

from backend.data.bundled import load_bundled
from backend.domain.bars import Series
from backend.rl.env import BUY_75, HOLD, N_ACTIONS, SELL_50, EnvConfig, MarketTensors
from backend.rl.gym_env import SizingGymEnv
from backend.rl.observation import fit_spec, market_features

WINDOW = 16
N_FEATURES = 10


def _slice(s: Series, a: int, b: int) -> Series:
    return Series(s.symbol, s.ts[a:b], s.open[a:b], s.high[a:b], s.low[a:b], s.close[a:b], s.volume[a:b])


@pytest.fixture(scope="module")
def data():
    s = _slice(load_bundled("SP500"), 0, 600)
    spec = fit_spec(market_features(s.open, s.high, s.low, s.close, s.volume)[:400], window=WINDOW)
    return MarketTensors.build([s], spec), spec


def make(data, seed=0, **cfg) -> SizingGymEnv:
    market, spec = data
    return SizingGymEnv(market, spec, EnvConfig(**{"episode_bars": 64, **cfg}), seed=seed)


def test_gymnasium_checker_passes_without_warnings(data):
    from gymnasium.utils.env_checker import check_env

    env = make(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)
    assert env.observation_space.shape == (data[1].size,) and env.action_space.n == N_ACTIONS


def test_sb3_checker_passes_without_warnings(data):
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(make(data), warn=True)


def test_maskable_ppo_learns_and_predicts_only_allowed_actions(data):
    from sb3_contrib import MaskablePPO

    env = make(data)
    model = MaskablePPO("MlpPolicy", env, n_steps=64, batch_size=32, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256

    obs, _ = env.reset(seed=3)
    masks_seen = set()
    for i in range(150):
        mask = env.action_masks()
        masks_seen.add(tuple(mask))
        action, _ = model.predict(obs, action_masks=mask, deterministic=i % 2 == 0)
        assert mask[int(action)], (i, mask, action)
        obs, _, terminated, truncated, info = env.step(action)
        assert not info["invalid"]
        if terminated or truncated:
            obs, _ = env.reset()
    assert any(not all(m) for m in masks_seen)  # the masks did restrict the policy


def test_a_masked_out_action_is_a_hold_and_reported(data):
    env = make(data)
    env.reset(seed=5)
    assert not env.action_masks()[SELL_50]  # flat and no shorting: nothing to sell
    obs_sell, r_sell, te_sell, tr_sell, info_sell = env.step(SELL_50)
    assert info_sell["invalid"] and info_sell["action"] == HOLD

    env.reset(seed=5)
    obs_hold, r_hold, te_hold, tr_hold, info_hold = env.step(HOLD)
    assert not info_hold["invalid"] and info_hold["action"] == HOLD
    np.testing.assert_array_equal(obs_sell, obs_hold)
    assert (r_sell, te_sell, tr_sell) == (r_hold, te_hold, tr_hold)

    with pytest.raises(ValueError):
        env.step(N_ACTIONS)


def _rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        out += [obs, np.float32(reward)]
        if terminated or truncated:
            out.append(env.reset()[0])
    return out


def test_reset_with_a_seed_is_reproducible(data):
    actions = [BUY_75, HOLD, BUY_75, SELL_50, HOLD] * 4
    env = make(data, seed=11)
    first, again = _rollout(env, 7, actions), _rollout(env, 7, actions)
    fresh = _rollout(make(data, seed=99), 7, actions)  # the constructor's seed does not matter once reset is seeded
    for a, b, c in zip(first, again, fresh):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    # the unseeded resets that follow a seeded one are reproducible too
    env.reset(seed=7)
    follow = [env.reset()[0] for _ in range(3)]
    env.reset(seed=7)
    np.testing.assert_array_equal(np.stack(follow), np.stack([env.reset()[0] for _ in range(3)]))
    # and different seeds start elsewhere
    starts = set()
    for s in range(5):
        env.reset(seed=s)
        starts.add(env.inner.t.item())
    assert len(starts) > 1
    # the constructor's seed drives the first unseeded reset
    np.testing.assert_array_equal(make(data, seed=4).reset()[0], make(data, seed=4).reset()[0])


def test_running_to_the_end_of_the_window_truncates_with_the_terminal_observation(data):
    market, _ = data
    env = make(data)
    obs, info = env.reset(seed=2)
    start, end = info["t"], info["end"]
    n_market = WINDOW * N_FEATURES
    np.testing.assert_array_equal(obs[:n_market], market.features[0, start - WINDOW + 1:start + 1].flatten().numpy())
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        obs, _, terminated, truncated, info = env.step(BUY_75 if env.action_masks()[BUY_75] else HOLD)
        steps += 1
    assert terminated is False and truncated is True
    assert steps == end - start == info["episode_length"]
    # the terminal observation shows the episode's last bar and its final account, not the next episode's start
    np.testing.assert_array_equal(obs[:n_market], market.features[0, end - WINDOW + 1:end + 1].flatten().numpy())
    assert obs[n_market + 2] == pytest.approx(np.log10(info["final_account"] / 1000.0), abs=1e-6)
    assert obs[n_market + 3] == 1.0  # it still holds the position it built
    assert obs in env.observation_space
    with pytest.raises(RuntimeError):
        env.step(HOLD)  # the episode is over until reset()
    next_obs, next_info = env.reset()
    assert not np.array_equal(obs, next_obs)
    assert next_obs[n_market + 3] == 0.0 and next_info["account"] == 1000.0


def test_ruin_terminates():
    # a steady 1% fall per bar while holding a long: with ruin at 99% of the start the episode ends on ruin
    close = 100 * 0.99 ** np.arange(300)
    ts = np.datetime64("2000-01-01", "s") + np.arange(300) * np.timedelta64(1, "D")
    s = Series("X", ts, close, close * 1.01, close * 0.99, close, np.ones(300))
    spec = fit_spec(market_features(s.open, s.high, s.low, s.close, s.volume), window=8)
    env = SizingGymEnv(MarketTensors.build([s], spec), spec, EnvConfig(ruin_pct=0.99, episode_bars=200), seed=0)
    env.reset(seed=0)
    terminated = truncated = False
    while not (terminated or truncated):
        obs, _, terminated, truncated, info = env.step(BUY_75 if env.action_masks()[BUY_75] else HOLD)
    assert terminated is True and truncated is False
    assert info["final_account"] < 990.0 and info["episode_length"] < 200
    assert obs[-3] == pytest.approx(np.log10(info["final_account"] / 1000.0), abs=1e-6)
