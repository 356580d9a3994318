import random
from collections import Counter

from backend.domain.model import Account, MarketContext, Side, Signal
from backend.domain.state import ACTIONS, Action
from backend.sizing.atr import AtrRule
from backend.sizing.base import SizingContext
from backend.sizing.qlearning import QLearningPolicy

STATE = "low_vol_trending|high|light|good"


class Table:
    def __init__(self, row, epsilon=0.0):
        self.row, self.eps = row, epsilon

    def q_lookup(self, state_key):
        assert state_key == STATE
        return self.row, self.eps


def ctx(fits=lambda size, lev: True) -> SizingContext:
    return SizingContext(
        signal=Signal("s", "SP500", Side.BUY, 0.8),
        market=MarketContext(price=100.0, atr=1.0, adx=30.0),
        account=Account(100_000, 100_000, 400_000, 4, True, 0),
        stop_distance_pct=0.02,
        base_size_usd=1_000.0,
        state_key=STATE,
        fits_caps=fits,
    )


def policy(row, epsilon=0.0, seed=0, min_visits=1):
    return QLearningPolicy(Table(row, epsilon), random.Random(seed), min_visits, AtrRule())


def test_unexplored_state_is_sized_by_the_atr_rule_and_still_learnable():
    p = policy({}).propose(ctx())
    assert p.policy == "atr" and p.size_usd == 1_000.0 and p.leverage == 1.0
    assert (p.state_key, p.action_key) == (STATE, "1.0|1.0")


def test_greedy_takes_the_best_valid_action_and_sizes_it():
    row = {"1.5|5.0": (9.0, 3), "0.7|2.0": (2.0, 4), "0.3|1.0": (-1.0, 2)}
    p = policy(row).propose(ctx())
    assert p.action_key == "1.5|5.0" and p.size_usd == 1_000 * 1.5 * 5 and p.leverage == 5 and p.q_value == 9.0
    # the same table, but the caps forbid more than 2x the base: the best action that fits wins
    p = policy(row).propose(ctx(fits=lambda size, lev: size <= 2_000))
    assert p.action_key == "0.7|2.0" and "masked by the caps" in p.why


def test_exploration_draws_only_valid_actions_and_is_reproducible():
    fits = lambda size, lev: lev <= 2  # noqa: E731
    row = {"1.0|1.0": (1.0, 5)}
    draws = [policy(row, epsilon=1.0, seed=s).propose(ctx(fits)).action_key for s in range(300)]
    assert {Action.parse(k).leverage for k in draws} == {1, 2}
    assert len(Counter(draws)) == 10  # every valid action gets tried
    again = [policy(row, epsilon=1.0, seed=s).propose(ctx(fits)).action_key for s in range(300)]
    assert draws == again


def test_when_nothing_fits_the_smallest_action_is_proposed():
    p = policy({"1.0|1.0": (1.0, 5)}).propose(ctx(fits=lambda size, lev: False))
    assert p.action_key == "0.3|1.0"


def test_every_action_is_reachable_greedily():
    for best in ACTIONS:
        p = policy({best.key: (1.0, 1)}).propose(ctx())
        # unvisited actions are 0, so the single positive one wins
        assert p.action_key == best.key
