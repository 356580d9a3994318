import random

import numpy as np
import pytest

from backend.domain.model import Account, MarketContext, Side, Signal, TradePath
from backend.domain.rewards import log_growth_reward
from backend.domain.state import ROOT_KEY, action_key, exposure_menu, pooled_keys
from backend.sizing.base import SizingContext
from backend.sizing.qlearning import Cell, KellyPolicy, QLearningPolicy
from tests.fakes import MemoryQTable

STATE = "low_vol_trending|high|light|good"
MENU = exposure_menu(3.0)
EQUITY = 100_000.0


def ctx(state=STATE, max_exposure=3.0, min_exposure=0.001) -> SizingContext:
    return SizingContext(
        signal=Signal("s", "SP500", Side.BUY, 0.8),
        market=MarketContext(price=100.0, atr=1.0, adx=30.0),
        account=Account(EQUITY, EQUITY, 4 * EQUITY, 4, True, 0),
        stop_distance_pct=0.02,
        state_key=state,
        max_exposure=max_exposure,
        min_exposure=min_exposure,
        atr_exposure=0.25,
    )


def agent(table, z=1.64, prior=50.0, horizon=None, seed=0) -> QLearningPolicy:
    return QLearningPolicy(table, MENU, log_growth_reward, confidence_z=z, prior_trades=prior,
                           horizon_trades=horizon, maintenance=0.25, rng=random.Random(seed))


def coin(rng, p, a, noise=0.002) -> TradePath:
    """A trade that gains or loses `a` (a gap, so the worst price is the loss), plus a little noise."""
    move = (a if rng.random() < p else -a) + rng.gauss(0, noise)
    exit_price = 100 * (1 + move)
    return TradePath(Side.BUY, 100.0, exit_price, min(exit_price, 100.0), 0.0, 48.0)


def learn(policy, table, paths, state=STATE):
    for path in paths:
        table.add(policy.learn(path, state, EQUITY))


def test_nothing_learned_means_skip():
    p = agent(MemoryQTable()).propose(ctx())
    assert p.exposure == 0 and p.action_key == "0" and p.policy == "qlearning"


def test_a_trade_teaches_every_exposure_of_its_state_and_coarser_levels():
    table = MemoryQTable()
    policy = agent(table)
    path = TradePath(Side.BUY, 100.0, 103.0, 99.0, 0.0, 24.0)
    learning = policy.learn(path, STATE, EQUITY)
    assert len(learning.rewards) == 4 * len(MENU) and learning.decay == 1.0
    table.add(learning)
    assert set(table.cells) == set(pooled_keys(STATE))
    for e in MENU:  # 99 is 1% below the entry: at 3x that leaves 97% equity, above 25% of 2.97
        expected = 100 * np.log(1 + e * 0.03) if e else 0.0
        assert table.cells[STATE][action_key(e)].reward_sum == pytest.approx(expected)
        assert table.cells[ROOT_KEY][action_key(e)].weight == 1


def test_a_clear_edge_is_sized_towards_kelly_and_more_so_with_more_evidence():
    """p = 0.6, +-8%: f* = 0.2 x 0.08 / 0.08^2 = 2.5 (per-trade Sharpe 0.2)."""
    rng = random.Random(1)
    table = MemoryQTable()
    policy = agent(table)
    learn(policy, table, [coin(rng, 0.6, 0.08) for _ in range(400)])
    early = policy.propose(ctx()).exposure
    learn(policy, table, [coin(rng, 0.6, 0.08) for _ in range(3600)])
    late = policy.propose(ctx()).exposure
    assert 0 < early < late <= 3.0 and late >= 1.6


@pytest.mark.parametrize("p", [0.5, 0.45])
def test_no_edge_or_a_losing_one_is_skipped(p):
    for seed in range(3):
        rng = random.Random(seed)
        table = MemoryQTable()
        policy = agent(table)
        learn(policy, table, [coin(rng, p, 0.08) for _ in range(1000)])
        assert policy.propose(ctx()).exposure == 0


def test_actions_are_ranked_by_their_expected_reward_not_by_how_quiet_they_are():
    """The old agent's failure: one loss buried a large action whose mean reward was much higher. Averaged, a
    noisy action with the higher mean wins once the evidence is clear."""
    table = MemoryQTable()
    n = 400
    cell = lambda mean, sd: Cell(n, mean * n, (sd * sd + mean * mean) * n, n)  # noqa: E731
    row = {"0": Cell(n, 0.0, 0.0, n), "0.25": cell(0.12, 0.5), "2": cell(1.71, 8.0)}
    for key in pooled_keys(STATE):
        table.cells[key] = row
    menu = (0.0, 0.25, 2.0)
    policy = QLearningPolicy(table, menu, log_growth_reward, confidence_z=1.64, prior_trades=50,
                             horizon_trades=None, maintenance=0.25, rng=random.Random(0))
    assert policy.propose(ctx()).exposure == 2.0
    assert policy.propose(ctx(max_exposure=1.0)).exposure == 0.25  # the caps mask it: the best that fits


def test_a_sparse_state_borrows_from_alike_siblings_and_an_informative_bucket_keeps_its_own():
    rng = random.Random(3)
    table = MemoryQTable()
    policy = agent(table)
    # confidence carries the information: "high" signals win (p=0.62), "very_low" ones lose (p=0.4)
    states = {"high": [f"{r}|high|{e}|good" for r in ("low_vol_trending", "neutral") for e in ("light", "heavy")],
              "very_low": [f"{r}|very_low|light|good" for r in ("low_vol_trending", "neutral")]}
    for _ in range(1500):
        learn(policy, table, [coin(rng, 0.62, 0.08)], state=rng.choice(states["high"]))
        learn(policy, table, [coin(rng, 0.40, 0.08)], state=rng.choice(states["very_low"]))
    assert policy.propose(ctx("neutral|high|light|good")).exposure >= 1.6
    # a state seen twice, both losers, in an exposure bucket that carries no information: two trades do not
    # outweigh hundreds in alike states: it is sized about as a state never seen (from what they share)
    sparse, unseen = "neutral|high|moderate|good", "neutral|high|max|good"
    pooled = policy.propose(ctx(unseen)).exposure
    learn(policy, table, [TradePath(Side.BUY, 100.0, 95.0, 95.0, 0.0, 48.0)] * 2, state=sparse)
    assert table.cells[sparse]["1"].weight == 2 and unseen not in table.cells
    assert pooled >= 1.6 and abs(MENU.index(policy.propose(ctx(sparse)).exposure) - MENU.index(pooled)) <= 1
    assert policy.propose(ctx("low_vol_trending|very_low|light|good")).exposure == 0
    assert policy.propose(ctx("neutral|very_low|max|bad")).exposure == 0  # unseen: its confidence bucket decides


def test_the_forgetting_horizon_follows_a_market_that_changes():
    rng = random.Random(5)
    remembers, forgets = MemoryQTable(), MemoryQTable()
    plain, horizon = agent(remembers), agent(forgets, horizon=200)
    for p in (0.62, 0.5):  # an edge, then none
        paths = [coin(rng, p, 0.08) for _ in range(1500)]
        learn(plain, remembers, paths)
        learn(horizon, forgets, paths)
    assert plain.propose(ctx()).exposure > 0  # its all-time average still shows the early edge
    assert horizon.propose(ctx()).exposure == 0
    assert forgets.cells[STATE]["1"].weight == pytest.approx(200, rel=1e-3)


def test_exploration_is_off_by_default_and_draws_only_what_the_caps_allow():
    table = MemoryQTable()
    assert agent(table).propose(ctx()).exposure == agent(table, seed=9).propose(ctx()).exposure == 0
    table.epsilon = 1.0
    draws = [agent(table, seed=s).propose(ctx(max_exposure=1.0, min_exposure=0.1)).exposure for s in range(200)]
    assert set(draws) == {0.0} | {e for e in MENU if 0.1 <= e <= 1.0}
    assert draws == [agent(table, seed=s).propose(ctx(max_exposure=1.0, min_exposure=0.1)).exposure
                     for s in range(200)]


def test_kelly_takes_the_best_average_over_all_trades_and_its_fraction():
    rng = random.Random(2)
    table = MemoryQTable()
    learn(agent(table), table, [coin(rng, 0.6, 0.08) for _ in range(4000)])
    full = KellyPolicy(table, MENU, 1.0).propose(ctx()).exposure
    assert 2.0 <= full <= 3.0
    assert KellyPolicy(table, MENU, 0.5).propose(ctx()).exposure == pytest.approx(full / 2)
    assert KellyPolicy(MemoryQTable(), MENU, 0.5).propose(ctx()).exposure == 0
