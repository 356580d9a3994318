"""The signal-conditioned sizing environment: a hand-checked episode, masks equal to the risk manager's caps,
and trade paths equal to what the live engine records."""
from __future__ import annotations

import math
import tempfile

import numpy as np
import pytest
import sqlalchemy as sa
import torch

from backend.brokers.sim import SimBroker
from backend.config import Settings
from backend.domain.bars import Series
from backend.data.signals import TimedSignal
from backend.data.synthetic import PROTECTIONS_OFF, SYMBOL, WARMUP, WIDE_CAPS, coin_case, market
from backend.domain.model import Account, AssetRules, Side, Signal
from backend.replay import run_replay
from backend.risk.manager import cap_limits
from backend.rl.observation import fit_spec, market_features
from backend.rl.signal_env import SignalSizingEnv, sizing_spec, trade_paths
from backend.sizing.base import SizingContext
from backend.sizing.fixed import FixedExposure

SLIP, COMMISSION = 2e-4, 1e-4


def flat_series(n: int = 200) -> Series:
    """Flat at 100 (each bar's range 99..101) until a gap to 110 at bar 153's open."""
    close = np.where(np.arange(n) >= 153, 110.0, 100.0)
    open_ = close.copy()
    ts = np.datetime64("2020-01-01", "s") + np.arange(n) * np.timedelta64(1, "D")
    return Series("AAA", ts, open_, np.maximum(open_, close) + 1, np.minimum(open_, close) - 1, close, np.ones(n))


def at(s: Series, bar: int) -> np.datetime64:
    return s.ts[bar] + np.timedelta64(3600, "s")  # during the bar's day: decided at its close


def spec_of(s: Series, window: int = 4):
    return sizing_spec(fit_spec(market_features(s.open, s.high, s.low, s.close, s.volume), window))


def paths(series: list[Series], signals: list[TimedSignal], settings: Settings, menu: tuple[float, ...]):
    return trade_paths(series, signals, settings.risk, settings.sim, settings.state.win_rate_window, menu)


def test_a_hand_checked_episode():
    s = flat_series()
    settings = Settings()
    menu = settings.risk.exposure_menu()
    signals = [
        TimedSignal(at(s, 150), Signal("a", "AAA", Side.BUY, 0.7, stop_price=95.0, time_limit_hours=48)),
        TimedSignal(at(s, 151), Signal("b", "AAA", Side.BUY, 0.9, stop_price=95.0)),  # same side: refused
        TimedSignal(at(s, 160), Signal("c", "AAA", Side.SELL, 0.4, stop_price=115.0, time_limit_hours=24)),
    ]
    trades = paths([s], signals, settings, menu)
    assert trades.ids == ["a", "c"] and trades.unused == {"same side as the active trade": 1}
    # a: decided at bar 150, in at bar 151's open plus slippage; its deadline (bar 152) asks for the exit, which
    # fills at bar 153's open (110, the gap) less slippage; its worst price is the lows of bars 151 and 152
    entry, exit_ = 100 * (1 + SLIP), 110 * (1 - SLIP)
    assert list(trades.bar) == [150, 160] and list(trades.exit_bar) == [153, 162]
    trade_return = exit_ / entry - 1 - 2 * COMMISSION
    one = menu.index(1.0)
    assert trades.growth[0, one] == pytest.approx(math.log1p(trade_return), rel=1e-9)
    assert trades.growth[0, menu.index(2.0)] == pytest.approx(math.log1p(2 * trade_return), rel=1e-9)
    assert trades.growth[0, 0] == 0.0
    assert trades.stop_pct[0] == pytest.approx(0.05) and trades.win_rate.tolist() == [0.5, 1.0]

    env = SignalSizingEnv(trades, [s], spec_of(s), settings.risk, settings.sim, menu, n_envs=1, episode_signals=2)
    obs, mask = env.reset(starts=torch.tensor([0]))
    # the risk cap binds: 8% of equity at a 5% stop is 1.6x; every menu exposure up to it may be chosen
    assert mask[0].tolist() == [e <= 1.6 + 1e-9 for e in menu]
    assert obs[0, -6:].tolist() == pytest.approx([1.0, 0.7, 0.5, math.log1p(2.0), 0.0, 0.5])
    obs, mask, reward, terminated, truncated, info = env.step(torch.tensor([one]))
    assert float(reward[0]) == pytest.approx(math.log1p(trade_return), rel=1e-6)
    assert not truncated[0] and float(info["exposure"][0]) == 1.0
    # c is decided at bar 160, after a ended (bar 153): its growth is in the equity, nothing is open
    assert float(env.equity[0]) == pytest.approx(100_000 * (1 + trade_return), rel=1e-6)
    assert obs[0, -6:].tolist() == pytest.approx([-1.0, 0.4, 10 * 5 / 110, math.log1p(1.0), 0.0, 1.0], rel=1e-5)
    obs, mask, reward, terminated, truncated, info = env.step(torch.tensor([menu.index(0.5)]))
    short_return = -((1 + SLIP) / (1 - SLIP) - 1) - 2 * COMMISSION  # flat: in at 110 - slippage, out at 110 + it
    assert float(reward[0]) == pytest.approx(math.log1p(0.5 * short_return), rel=1e-5)
    assert truncated[0] and float(info["episode_return"][0]) == pytest.approx(
        math.log1p(trade_return) + math.log1p(0.5 * short_return), rel=1e-5)


def test_masks_equal_the_risk_managers_caps():
    """For random accounts, stops and caps, the environment's mask is SizingContext.feasible over the caps the
    risk manager computes with floats."""
    rng = np.random.default_rng(3)
    s = flat_series()
    for _ in range(20):
        settings = Settings(rm_max_leverage=float(rng.uniform(1, 8)),
                            rm_max_position_exposure=float(rng.uniform(0.5, 6)), rm_max_exposure=float(rng.uniform(1, 6)),
                            rm_max_risk_pct=float(rng.uniform(0.01, 0.3)), sim_multiplier=float(rng.uniform(1, 8)),
                            rm_max_position_usd=float(rng.uniform(1e3, 5e5)) if rng.random() < 0.5 else None,
                            rm_min_position_usd=float(rng.uniform(10, 5000)))
        menu = settings.risk.exposure_menu()
        stop = float(rng.uniform(80, 99.9))
        signals = [TimedSignal(at(s, 150), Signal("a", "AAA", Side.BUY, 0.5, stop_price=stop, time_limit_hours=24)),
                   TimedSignal(at(s, 160), Signal("b", "AAA", Side.BUY, 0.5, stop_price=stop, time_limit_hours=24))]
        trades = paths([s], signals, settings, menu)
        env = SignalSizingEnv(trades, [s], spec_of(s), settings.risk, settings.sim, menu, n_envs=4)
        env.reset(starts=torch.zeros(4, dtype=torch.long))
        env.equity = torch.tensor(rng.uniform(1e3, 1e6, 4))
        env.open_notional = torch.tensor(rng.uniform(0, 2, (4, 1))) * env.equity[:, None]
        mask = env.action_mask()
        for k in range(4):
            equity, gross = float(env.equity[k]), float(env.open_notional[k, 0])
            account = Account(equity, equity - gross, settings.sim.multiplier * equity - gross, settings.sim.multiplier,
                              True, gross)
            limits = cap_limits(settings.risk, account, float(trades.stop_pct[0]), AssetRules())
            ctx = SizingContext(None, None, account, float(trades.stop_pct[0]), "", min(limits.values()) / equity,
                                settings.risk.min_position_usd / equity, 0.0)
            assert mask[k].tolist() == [ctx.feasible(e) for e in menu]


def test_trade_paths_are_the_live_engines():
    """The same generated market through the live engine (fixed 1x): every trade's path return is the one the
    environment computed, so training rewards are what serving earns."""
    case = coin_case(1.5, 6, 40)
    m = market(case, 5)
    settings = Settings(sim_symbols=(SYMBOL,), log_level="warning", **WIDE_CAPS, **PROTECTIONS_OFF)
    trades = paths([m.series], m.timed, settings, settings.risk.exposure_menu())
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{scratch}/t.db"
        broker = SimBroker({SYMBOL: m.series}, start_index=WARMUP - 1, initial_cash=settings.sim.initial_cash,
                           multiplier=settings.sim.multiplier, maintenance_margin=settings.risk.maintenance_margin)
        run_replay(settings.replace(database_url=url), broker=broker, policy=FixedExposure(1.0),
                   signals=m.schedule())
        engine = sa.create_engine(url)
        with engine.connect() as c:
            rows = dict(c.execute(sa.text("SELECT t.signal_id, o.trade_return FROM trade t JOIN outcome o "
                                          "ON o.trade_id = t.id")).all())
        engine.dispose()
    one = settings.risk.exposure_menu().index(1.0)
    assert len(rows) == len(trades) >= 38
    for sid, growth in zip(trades.ids, trades.growth[:, one]):
        assert math.expm1(growth) == pytest.approx(rows[sid], abs=2e-4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny real training run on a generated market with an edge (f* = 1.5), tested on another seed's."""
    from backend.rl.ppo import PPOConfig
    from backend.rl.training import SIZING_PPO, SignalData, run_sizing

    out = tmp_path_factory.mktemp("sizing")
    config = PPOConfig(**(SIZING_PPO | dict(seed=1, total_timesteps=24_576, n_envs=256, hidden=32, device="cpu")))
    settings = Settings(**PROTECTIONS_OFF)
    return run_sizing(config, SignalData(signals="coin:1.5:6", trades=300, window=4), dict(WIDE_CAPS), out, settings)


def test_a_tiny_training_run_sizes_better_than_random(trained):
    path, report = trained
    held_out = report["held_out"]
    assert held_out["signals"] >= 290 and report["data_window"]["test_seed"] != report["data_window"]["train_seed"]
    assert held_out["policy"]["log_growth"] > held_out["random"]["log_growth"]
    assert held_out["policy"]["log_growth"] > 0 and held_out["policy"]["mean_exposure"] > 0.2


def test_a_checkpoint_records_its_kind_menu_caps_and_window_and_the_wrong_kind_is_refused(trained):
    from backend.rl import checkpoint
    from backend.rl.observation import SpecMismatch

    path, _ = trained
    loaded = checkpoint.load(path, kind="sizing")
    assert loaded.kind == "sizing" and loaded.menu == Settings(**WIDE_CAPS).risk.exposure_menu()
    assert loaded.meta["sizing"]["caps"]["rm_max_leverage"] == WIDE_CAPS["rm_max_leverage"]
    assert loaded.meta["data_window"]["generated"] == "coin:1.5:6" and loaded.n_actions == len(loaded.menu)
    with pytest.raises(checkpoint.CheckpointError, match="is a sizing checkpoint .* a trading checkpoint"):
        checkpoint.load(path, kind="trading")
    with pytest.raises(checkpoint.CheckpointError, match="is a trading checkpoint .* a sizing checkpoint"):
        checkpoint.load(Settings().sizing.model_path.parents[1] / "ppo-trader" / "model.pt", kind="sizing")
    blob = torch.load(path, weights_only=True)
    blob["observation_spec"]["account_features"] = blob["observation_spec"]["account_features"][:-1]
    torch.save(blob, path.with_name("other.pt"))
    with pytest.raises(SpecMismatch, match="differs from this code's"):
        checkpoint.load(path.with_name("other.pt"), kind="sizing")


def test_served_as_trained_the_live_observation_mask_and_exposure_are_the_environments(trained, tmp_path):
    """SIZING_POLICY=ppo with a sizing checkpoint, through the risk manager on the simulated broker at a held-out
    signal's bar: the observation and the mask equal the environment's at that signal, and the decision's exposure
    is the environment's greedy choice."""
    from backend.bootstrap import build_service
    from backend.rl import checkpoint
    from backend.rl.training import SignalData, sizing_data
    from backend.sizing.ppo import PPOSizingPolicy

    path, _ = trained
    settings = Settings(database_url=f"sqlite:///{tmp_path}/s.db", sim_symbols=(SYMBOL,),
                        sizing_policy="ppo", model_path=path, log_level="warning", **WIDE_CAPS, **PROTECTIONS_OFF)
    loaded = checkpoint.load(path, kind="sizing")
    *_, series, signals, _, _ = sizing_data(SignalData(signals="coin:1.5:6", trades=300, window=4), settings)
    trades = paths(series, signals, settings, loaded.menu)
    env = SignalSizingEnv(trades, series, loaded.spec, settings.risk, settings.sim, loaded.menu, n_envs=1)
    by_id = {t.signal.signal_id: t.signal for t in signals}
    broker = SimBroker({SYMBOL: series[0]}, start_index=int(trades.bar[0]), initial_cash=settings.sim.initial_cash,
                       multiplier=settings.sim.multiplier, maintenance_margin=settings.risk.maintenance_margin)
    service = build_service(settings, broker=broker)
    try:
        policy = service.risk.policy
        assert isinstance(policy, PPOSizingPolicy)
        for k in range(6):
            while broker.index < trades.bar[k]:
                broker.advance()
            service.risk._win_rate = lambda k=k: float(trades.win_rate[k])  # the store's, as the environment has it
            obs, mask = env.reset(starts=torch.tensor([k]))
            seen = {}
            real = policy.observation
            policy.observation = lambda ctx: seen.setdefault("obs", real(ctx))  # noqa: B023
            decision = service.risk.decide(by_id[trades.ids[k]])
            policy.observation = real
            live_obs, live_mask = seen["obs"]
            assert torch.allclose(live_obs.float(), obs[0], atol=1e-5)
            assert live_mask.tolist() == mask[0].tolist()
            greedy = int(loaded.probabilities(obs[0], mask[0]).argmax())
            assert decision.exposure == pytest.approx(loaded.menu[greedy], rel=1e-9)
            assert decision.leverage == pytest.approx(max(1.0, loaded.menu[greedy]))
            assert decision.action_key == f"{loaded.menu[greedy]:g}" and decision.model_version == loaded.version
        assert policy.describe()["kind"] == "sizing" and sum(policy.describe()["action_counts"].values()) == 6
    finally:
        service.close()


def test_the_gym_view_passes_the_checkers_steps_as_the_vectorised_env_and_trains_maskable_ppo():
    import warnings

    from gymnasium.utils.env_checker import check_env
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    from backend.rl.signal_gym import SignalSizingGymEnv

    m = market(coin_case(1.5, 6, 60), 2)
    settings = Settings(**WIDE_CAPS, **PROTECTIONS_OFF)
    menu = settings.risk.exposure_menu()
    args = (paths([m.series], m.timed, settings, menu), [m.series], spec_of(m.series, 2), settings.risk, settings.sim,
            menu)
    gym_env = SignalSizingGymEnv(*args, episode_signals=8, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym_env, skip_render_check=True)
        sb3_check_env(SignalSizingGymEnv(*args, episode_signals=8), warn=True)

    vector = SignalSizingEnv(*args, n_envs=1, episode_signals=8, seed=4)
    obs, mask = vector.reset()
    gym_obs, _ = gym_env.reset(seed=4)
    for k in range(8):
        assert np.array_equal(gym_obs, obs[0].numpy()) and np.array_equal(gym_env.action_masks(), mask[0].numpy())
        action = int(np.flatnonzero(mask[0].numpy())[k % int(mask[0].sum())])
        gym_obs, reward, terminated, truncated, _ = gym_env.step(action)
        obs, mask, vector_reward, _, vector_truncated, info = vector.step(torch.tensor([action]))
        assert reward == pytest.approx(float(vector_reward[0])) and not terminated and truncated == (k == 7)
    assert truncated and np.array_equal(gym_obs, info["final_obs"][0].numpy())

    model = MaskablePPO("MlpPolicy", gym_env, n_steps=32, batch_size=16, gamma=0.0, seed=0, device="cpu")
    model.learn(total_timesteps=64)
    gym_obs, _ = gym_env.reset(seed=1)
    action, _ = model.predict(gym_obs, action_masks=gym_env.action_masks(), deterministic=True)
    assert model.num_timesteps >= 64 and gym_env.action_masks()[int(action)]


def test_pessimism_costs_each_exposure_its_standard_error():
    m = market(coin_case(1.5, 6, 60), 2)
    settings = Settings(**WIDE_CAPS, **PROTECTIONS_OFF)
    trades = paths([m.series], m.timed, settings, settings.risk.exposure_menu())
    cost = trades.growth - trades.pessimistic(1.28).growth
    assert np.allclose(cost, 1.28 * trades.growth.std(axis=0) / np.sqrt(len(trades)))
    assert cost[:, 0].max() == 0 and (np.diff(cost[0]) > 0).all()  # skipping costs nothing, more exposure more
