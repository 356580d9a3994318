"""The multi-asset regime environment (seed 004) and its GRU PPO, on small synthetic two-asset series."""
import numpy as np
import pytest
import torch

from backend.rl.env import EnvConfig, MarketTensors
from backend.rl.observation import MARKET_FEATURES, fit_spec, market_features
from backend.rl.ppo import Agent, PPOConfig, train
from backend.rl.regime_env import ACTION_NAMES, HOLD, REGIMES, RegimeEnv
from tests.unit.test_env import series, walk

COST = EnvConfig().cost_rate  # 3 bps per unit traded
F = len(MARKET_FEATURES)
ALL_CASH, ALL_SP500, EQUAL, SP70 = (ACTION_NAMES.index(n) for n in ("ALL_CASH", "ALL_SP500", "EQUAL_WEIGHT",
                                                                     "SP500_70_NASDAQ_30"))


def make(closes, n=4, window=8, **cfg) -> RegimeEnv:
    pair = [series(np.asarray(c, float)) for c in closes]
    spec = fit_spec(np.concatenate([market_features(s.open, s.high, s.low, s.close, s.volume) for s in pair]),
                    window)
    return RegimeEnv(MarketTensors.build(pair, spec), spec, EnvConfig(**cfg), n_envs=n, seed=0)


def step(env, *actions):
    return env.step(torch.tensor(actions))


def test_shapes_layout_and_masks():
    env = make([walk(300, 1), walk(300, 2)], n=3)
    obs, mask = env.reset()
    assert obs.shape == (3, 8 * 2 * F + 3) == (3, env.spec.size) and len(env.spec.market_features) == 2 * F
    assert mask.shape == (3, len(REGIMES) + 1) and mask[:, 1:].all()
    assert not mask[:, HOLD].any()  # starts in cash: HOLD would be ALL_CASH
    window = obs[:, :8 * 2 * F].view(3, 8, 2, F)  # per bar: both assets' features side by side
    for k in range(2):
        assert torch.equal(window[:, -1, k], env.market.features[k, env.t])
        assert torch.equal(window[:, 0, k], env.market.features[k, env.t - 7])
    obs, mask, _, _, _, info = step(env, ALL_SP500, ALL_CASH, HOLD)
    assert info["invalid"].tolist() == [False, False, True]
    assert mask[0].all() and mask[1].tolist() == mask[2].tolist() == [False] + [True] * len(REGIMES)
    assert obs[0, -3:-1].tolist() == pytest.approx([1.0, 0.0]) and obs[1, -3:].tolist() == [0.0, 0.0, 1.0]


def test_reward_is_the_return_after_costs_minus_the_equal_weight_return():
    a, b = walk(300, 3), walk(300, 4)
    env = make([a, b], n=1)
    env.reset(starts=torch.tensor([100]))
    _, _, reward, _, _, info = step(env, SP70)  # from cash: 0.7 + 0.3 traded at the close of bar 100
    ra, rb = a[101] / a[100] - 1, b[101] / b[100] - 1
    growth = (1 - COST * 1.0) * (1 + 0.7 * ra + 0.3 * rb)
    assert float(reward) == pytest.approx(growth - 1 - (ra + rb) / 2, abs=1e-7)
    assert float(env.account) == pytest.approx(1000 * growth, rel=1e-6)
    assert float(info["traded"]) == pytest.approx(1000.0, rel=1e-6)

    wa, wb = 0.7 * (1 + ra) / (1 + 0.7 * ra + 0.3 * rb), 0.3 * (1 + rb) / (1 + 0.7 * ra + 0.3 * rb)  # drifted
    assert env.weights[0].tolist() == pytest.approx([wa, wb], rel=1e-5)
    _, _, reward, _, _, _ = step(env, EQUAL)
    ra, rb = a[102] / a[101] - 1, b[102] / b[101] - 1
    traded = abs(0.5 - wa) + abs(0.5 - wb)
    assert float(reward) == pytest.approx((1 - COST * traded) * (1 + 0.5 * ra + 0.5 * rb) - 1 - (ra + rb) / 2,
                                          abs=1e-7)  # equal weight pays only the cost of getting there

    before = env.weights.clone()
    _, _, reward, _, _, info = step(env, HOLD)  # HOLD: no trade, the weights drift
    ra, rb = a[103] / a[102] - 1, b[103] / b[102] - 1
    assert float(info["traded"]) == 0.0
    assert float(reward) == pytest.approx(float(before[0] @ torch.tensor([ra, rb], dtype=torch.float32))
                                          - (ra + rb) / 2, abs=1e-6)


def test_episodes_end_at_their_window_and_restart_in_cash():
    env = make([walk(300, 5), walk(300, 6)], n=2, episode_bars=3)
    env.reset()
    step(env, ALL_SP500, EQUAL)
    step(env, HOLD, HOLD)
    _, mask, _, terminated, truncated, info = step(env, HOLD, HOLD)
    assert truncated.all() and not terminated.any()
    assert info["final_obs"][:, -3:-1].sum(dim=1).tolist() == pytest.approx([1.0, 1.0], rel=1e-5)  # still invested
    assert info["episode_length"].tolist() == [3, 3]
    assert env.weights.sum().item() == 0 and env.account.tolist() == [1000.0, 1000.0]
    assert not mask[:, HOLD].any()


def test_gru_ppo_trains_and_learns_to_prefer_the_rising_asset():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    up = 100 * np.exp(np.cumsum(rng.normal(0.004, 0.01, 500)))
    down = 100 * np.exp(np.cumsum(rng.normal(-0.004, 0.01, 500)))
    env = make([up, down], n=32, episode_bars=64)
    cfg = PPOConfig(total_timesteps=6 * 32 * 32, n_envs=32, n_steps=32, n_minibatches=4, hidden=32, gru=True,
                    learning_rate=1e-3, env=env.cfg)
    obs, mask = env.reset()

    def probabilities(agent):
        with torch.no_grad():
            logits = agent.actor(agent._encode(obs)).masked_fill(~mask, -torch.inf)
        return torch.softmax(logits, dim=-1).mean(dim=0)

    agent, history = train(cfg, env)
    torch.manual_seed(cfg.seed)  # the initial weights train() drew
    before = probabilities(Agent(env.spec, cfg.hidden, True, len(ACTION_NAMES)))
    after = probabilities(agent)
    for row in history:
        for name in ("losses/policy_loss", "losses/value_loss", "losses/entropy", "collapse/dominance",
                     "collapse/action_entropy", "collapse/repeats", "collapse/trade_frequency"):
            assert np.isfinite(row[name]), name
        assert sum(row[f"actions/{i}"] for i in range(len(ACTION_NAMES))) == 32 * 32
        assert row["charts/invalid_actions"] == 0
    assert after[ALL_SP500] > before[ALL_SP500] + 0.05  # asset 0 rises, asset 1 falls
