"""Real torch training on small data: the trainer, checkpoints and held-out validation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.data.bundled import load_bundled
from backend.rl import checkpoint
from backend.rl.checkpoint import CheckpointError
from backend.rl.env import BUY_50, HOLD, SELL_50, EnvConfig, MarketTensors, SizingEnv
from backend.rl.evaluate import validate
from backend.rl.observation import SpecMismatch, fit_spec, market_features
from backend.rl.ppo import Agent, PPOConfig, train

TRAIN_END = np.datetime64("2004-12-31", "s")


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    sp = load_bundled("SP500")
    rows = int(np.searchsorted(sp.ts, TRAIN_END, side="right"))
    spec = fit_spec(market_features(sp.open, sp.high, sp.low, sp.close, sp.volume)[:rows], window=8)
    train_market = MarketTensors.build([sp], spec, end=TRAIN_END)
    test_market = MarketTensors.build([sp], spec, start=np.datetime64("2005-01-03", "s"),
                                      end=np.datetime64("2006-12-29", "s"))
    return spec, train_market, test_market


def small_config(**kw) -> PPOConfig:
    return PPOConfig(total_timesteps=4 * 32 * 16, n_envs=32, n_steps=16, n_minibatches=4, update_epochs=2,
                     hidden=32, env=EnvConfig(episode_bars=64), **kw)


def run(data, **kw):
    spec, market, _ = data
    cfg = small_config(**kw)
    return train(cfg, SizingEnv(market, spec, cfg.env, cfg.n_envs, seed=cfg.seed))


def test_training_logs_the_documented_metrics_and_never_picks_a_masked_action(data):
    agent, history = run(data)
    assert len(history) == 4
    for row in history:
        assert row["charts/invalid_actions"] == 0
        for name in ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl",
                     "charts/SPS", "collapse/dominance", "collapse/action_entropy"):
            assert np.isfinite(row[name]), name
    assert sum(history[-1][f"actions/{i}"] for i in range(7)) == 32 * 16


def test_a_seed_reproduces_a_run_and_another_seed_does_not(data):
    _, a = run(data, seed=3)
    _, b = run(data, seed=3)
    _, c = run(data, seed=4)
    strip = lambda h: [{k: v for k, v in r.items() if k != "charts/SPS"} for r in h]  # noqa: E731
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


def test_gru_agent_trains_too(data):
    _, history = run(data, gru=True)
    assert np.isfinite(history[-1]["losses/value_loss"])


def test_checkpoint_round_trip_with_weights_only_and_validation(data, tmp_path):
    spec, _, test_market = data
    agent, history = run(data)
    path = tmp_path / "model.pt"
    checkpoint.save(path, agent, spec, small_config(), data_window={"train_end": "2004-12-31"}, metrics=history[-1])
    loaded = checkpoint.load(path)  # torch.load(weights_only=True) inside
    obs = torch.randn(5, spec.size)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[:, 4:] = False
    probs = loaded.probabilities(obs, mask)
    assert torch.allclose(probs.sum(-1), torch.ones(5)) and (probs[:, 4:] == 0).all()
    with torch.no_grad():
        _, _, _, value = agent.get_action_and_value(obs, mask)
    assert torch.allclose(loaded.agent.get_value(obs), value)
    assert loaded.meta["data_window"] == {"train_end": "2004-12-31"} and loaded.version.startswith("ppo-")

    report = validate(checkpoint.greedy(loaded), test_market, spec, loaded.env, episodes=8)
    assert report.invalid_share == 0 and report.checks["no_invalid_actions"]
    assert abs(sum(report.action_share.values()) - 1) < 1e-6 and report.episodes == 8
    assert report == validate(checkpoint.greedy(loaded), test_market, spec, loaded.env, episodes=8)  # repeatable
    hold = validate(lambda o, m: torch.zeros(len(o), dtype=torch.long), test_market, spec, loaded.env, episodes=8)
    assert hold.mean_final_account == 1.0 and not hold.checks["trades"]  # a policy that never trades fails


def test_bad_checkpoints_are_clear_errors(data, tmp_path):
    spec, _, _ = data
    agent, history = run(data)
    good = tmp_path / "good.pt"
    checkpoint.save(good, agent, spec, small_config(), data_window={}, metrics={})
    blob = torch.load(good, weights_only=True)

    stale = tmp_path / "stale.pt"
    torch.save({**blob, "observation_spec": {**blob["observation_spec"], "version": 0}}, stale)
    with pytest.raises(SpecMismatch, match="retrain"):
        checkpoint.load(stale)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        checkpoint.load(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable"):
        checkpoint.load(junk)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "sizer-ppo", "payload": EnvConfig()}, pickled)  # arbitrary objects are refused
    with pytest.raises(CheckpointError):
        checkpoint.load(pickled)


def test_a_legacy_three_action_checkpoint_maps_onto_seven(data, tmp_path):
    spec, _, _ = data
    legacy = Agent(spec, hidden=32, n_actions=3)
    with torch.no_grad():
        legacy.actor.bias.copy_(torch.tensor([0.0, 50.0, 0.0]))  # all but certain to BUY
        legacy.actor.weight.zero_()
    path = tmp_path / "legacy.pt"
    checkpoint.save(path, legacy, spec, small_config(), data_window={}, metrics={}, n_actions=3)
    loaded = checkpoint.load(path)
    probs = loaded.probabilities(torch.zeros(spec.size), torch.ones(7, dtype=torch.bool))
    assert probs.argmax() == BUY_50 and probs[[1, 3, 4, 6]].sum() == 0
    masked = torch.tensor([True, False, False, False, True, True, True])  # buying not allowed
    probs = loaded.probabilities(torch.zeros(spec.size), masked)
    assert probs[BUY_50] == 0 and probs[HOLD] + probs[SELL_50] == pytest.approx(1.0)


def test_sampling_follows_the_probabilities_and_never_draws_an_impossible_action(monkeypatch):
    from backend.rl.ppo import sample

    torch.manual_seed(0)
    p = torch.tensor([[0.0, 0.2, 0.0, 0.5, 0.3, 0.0]]).expand(200_000, -1)
    drawn = sample(p)
    share = torch.bincount(drawn, minlength=6).float() / len(drawn)
    assert share[[0, 2, 5]].sum() == 0
    assert share.tolist() == pytest.approx(p[0].tolist(), abs=0.005)
    # a draw at the very total (rounding) is the last action with any probability, not a masked one after it
    monkeypatch.setattr(torch, "rand_like", torch.ones_like)
    assert sample(torch.tensor([[0.25, 0.75, 0.0]])).tolist() == [1]


def test_an_ordinal_policy_is_unimodal_over_the_actions_and_near_uniform_at_first(data):
    spec, _, _ = data
    torch.manual_seed(0)
    agent = Agent(spec, hidden=32, n_actions=24, ordinal=True, activation="relu")
    obs, mask = torch.randn(64, spec.size), torch.ones(64, 24, dtype=torch.bool)
    logp, _ = agent.log_policy(obs, mask)
    assert logp.exp().max() < 1.5 / 24 and logp.exp().min() > 0.5 / 24
    with torch.no_grad():
        agent.actor.weight.normal_(0, 0.5)  # other centres and widths: one peak, falling off on both sides
        steps = torch.sign(agent.logits(agent._encode(obs)).diff(dim=1))
    assert ((steps[:, 1:] - steps[:, :-1]) <= 0).all()  # rises, then falls: never falls then rises
