"""Live A/B tests through the whole engine (executor, risk manager and caps, simulated broker, monitor, learning)
on generated markets: an RL arm with a known advantage is found ahead, and an A/A test (no difference at all)
is found significant no more often than its error rate allows."""
from __future__ import annotations

import math
import shutil

import pytest
from scipy.stats import binom

from backend.brokers.sim import SimBroker
from backend.config import Settings
from backend.data.synthetic import PROTECTIONS_OFF, SYMBOL, WARMUP, coin_case, market
from backend.evaluation.ab import ArmTrade, report
from backend.replay import run_replay
from backend.sizing.ab import CONTROL, RL
from backend.sizing.fixed import FixedExposure
from backend.store.db import make_engine
from backend.store.repositories import Store



def settings(url: str, **overrides) -> Settings:
    return Settings(database_url=url, sim_symbols=(SYMBOL,), rl_sizing_seed=1, **PROTECTIONS_OFF,
                    **overrides)


def replay(s: Settings, trades: int, seed: int, policy=None) -> None:
    """`trades` signals of a coin market with a clear edge (a trade's Sharpe 0.54), under the shipped caps."""
    m = market(coin_case(f_star=3.0, t500=12, trades=trades), seed)
    broker = SimBroker({SYMBOL: m.series}, start_index=WARMUP - 1, initial_cash=s.sim.initial_cash,
                       multiplier=s.sim.multiplier, maintenance_margin=s.risk.maintenance_margin)
    run_replay(s, broker=broker, signals=m.schedule(), policy=policy)


def ab_report(s: Settings) -> tuple[dict, Store]:
    store = Store.open(make_engine(s.service.database_url))
    return report([ArmTrade.of(t) for t in store.trades.ab_trades()], s.ab.alpha, s.ab.power, s.ab.seed), store


@pytest.fixture(scope="module")
def experienced(tmp_path_factory) -> str:
    """A database whose Q agent has learned from 300 trades of the edge market (another draw of it)."""
    path = tmp_path_factory.mktemp("ab") / "experienced.db"
    replay(settings(f"sqlite:///{path}"), 300, seed=1)
    return str(path)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_experienced_q_agent_is_found_ahead_of_the_atr_rule(experienced, tmp_path, seed):
    """On a clear edge the experienced agent sizes near the caps' limit and the ATR rule risks 0.5%: about
    100 signals per arm find the difference at far more than 80% power."""
    shutil.copy(experienced, tmp_path / "ab.db")
    s = settings(f"sqlite:///{tmp_path}/ab.db", ab_enabled=True, ab_seed=seed)
    before = Store.open(make_engine(s.service.database_url)).q_table.agent().total_updates
    replay(s, 200, seed=10 + seed)
    r, store = ab_report(s)
    arms = r["arms"]
    assert arms[RL]["signals"] + arms[CONTROL]["signals"] == 200  # every signal closed, in one arm or the other
    assert 80 <= arms[RL]["signals"] <= 120
    assert r["verdict"] == "RL ahead, significant" and r["log_growth_difference"]["p_value"] < 0.01
    assert r["log_growth_difference"]["bootstrap_ci"][0] > 0 and r["trades_still_needed"] == 0
    assert arms[RL]["mean_log_growth"] > 5 * arms[CONTROL]["mean_log_growth"] > 0
    assert arms[RL]["win_rate"] == pytest.approx(arms[CONTROL]["win_rate"], abs=0.15)  # the same trades
    # the control arm's trades taught the agent too: every trade of both arms is one learned update
    trades = store.trades.ab_trades()
    assert {t.arm for t in trades} == {RL, CONTROL}
    assert all(t.rl_state_key is not None for t in trades)
    assert {t.policy for t in trades if t.arm == CONTROL} == {"atr"}
    assert store.q_table.agent().total_updates - before == len(trades) == 200
    store.engine.dispose()


AA_SEEDS = range(6)
ALPHA = 0.05


def test_an_a_a_test_is_rarely_significant(tmp_path):
    """Both arms the same fixed fraction: a significant verdict is a false positive. Each run errs with
    probability ALPHA, so with 6 seeds 3 or more errors would happen by chance 0.2% of the time."""
    significant = 0
    for seed in AA_SEEDS:
        s = settings(f"sqlite:///{tmp_path}/aa{seed}.db", ab_enabled=True, ab_seed=seed, ab_control="fixed",
                     sizing_fixed_exposure=0.5)
        replay(s, 100, seed=200 + seed, policy=FixedExposure(0.5))
        r, store = ab_report(s)
        store.engine.dispose()
        assert r["arms"][RL]["signals"] + r["arms"][CONTROL]["signals"] == 100
        significant += r["verdict"] != "not yet significant"
    assert binom.sf(2, len(AA_SEEDS), ALPHA) < 0.003 and significant <= 2
    assert math.isclose(Settings().ab.alpha, ALPHA)
