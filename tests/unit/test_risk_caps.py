"""No policy output can pass a cap: property tests over states, Q-tables, prices and accounts."""
from __future__ import annotations

import functools
import math
import random

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from backend.config import Settings
from backend.domain.model import Account, AssetRules, Proposal, Side, Signal
from backend.rl import checkpoint
from backend.sizing.ppo import PPOPolicy
from backend.domain.state import ACTIONS
from backend.risk import RiskManager, apply_caps, Limits
from backend.sizing.atr import AtrRule
from backend.sizing.qlearning import QLearningPolicy
from tests.conftest import make_settings
from tests.fakes import StaticBroker, random_walk

finite = dict(allow_nan=False, allow_infinity=False)


class HostilePolicy:
    """Returns whatever hypothesis draws: huge, tiny, negative, NaN, infinite."""

    name = "hostile"

    def __init__(self, size: float, leverage: float) -> None:
        self.size, self.leverage = size, leverage

    def propose(self, ctx) -> Proposal:
        return Proposal(self.size, self.leverage, self.name, "anything")


class RandomQTable:
    def __init__(self, values: dict[str, tuple[float, int]], epsilon: float) -> None:
        self.values, self.eps = values, epsilon

    def q_lookup(self, state_key):
        return self.values, self.eps


accounts = st.builds(
    lambda equity, cash_frac, bp_mult, multiplier, shorting, gross_frac, nmbp: Account(
        equity=equity, cash=equity * cash_frac, buying_power=equity * bp_mult, multiplier=multiplier,
        shorting_enabled=shorting, gross_position_value=equity * gross_frac,
        non_marginable_buying_power=None if nmbp is None else equity * nmbp,
    ),
    equity=st.floats(-1e4, 1e8, **finite),
    cash_frac=st.floats(-1, 1, **finite),
    bp_mult=st.floats(0, 5, **finite),
    multiplier=st.floats(1, 10, **finite),
    shorting=st.booleans(),
    gross_frac=st.floats(0, 5, **finite),
    nmbp=st.one_of(st.none(), st.floats(-1, 2, **finite)),
)
assets = st.builds(AssetRules, tradable=st.booleans(), fractionable=st.booleans(), shortable=st.booleans(),
                   marginable=st.booleans(), market_open=st.booleans())
caps = st.fixed_dictionaries({
    "rm_max_leverage": st.floats(1, 10, **finite),
    "rm_max_position_usd": st.floats(1_000, 1e7, **finite),
    "rm_min_position_usd": st.floats(0, 1_000, **finite),
    "rm_risk_per_trade_pct": st.floats(0.001, 0.01, **finite),
    "rm_max_risk_pct": st.floats(0.01, 0.1, **finite),
    "rm_max_exposure": st.floats(0.1, 5, **finite),
})
policies = st.one_of(
    st.builds(HostilePolicy, st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True)),
    st.builds(
        lambda q, eps, seed, min_visits: QLearningPolicy(
            RandomQTable(q, eps), random.Random(seed), min_visits, AtrRule()),
        st.dictionaries(st.sampled_from([a.key for a in ACTIONS]), st.tuples(st.floats(-100, 100, **finite), st.integers(0, 50))),
        st.floats(0, 1, **finite), st.integers(0, 2**32), st.integers(0, 3),
    ),
    st.just(AtrRule()),
    st.just("ppo"),  # the shipped checkpoint, built per example around its broker
)


@functools.cache
def shipped_model():
    return checkpoint.load(Settings(_env_file=None).model_path)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(account=accounts, limits=caps, policy=policies, price_scale=st.floats(0.01, 1e5, **finite),
       confidence=st.floats(0, 1, **finite), side=st.sampled_from(Side), asset=assets,
       stop_atrs=st.one_of(st.none(), st.floats(0.05, 10, **finite)), seed=st.integers(0, 1000))
def test_no_policy_output_passes_a_cap(account, limits, policy, price_scale, confidence, side, asset,
                                       stop_atrs, seed):
    settings = make_settings(**limits)
    series = random_walk(400, start=price_scale, seed=seed)
    broker = StaticBroker(account, series, asset)
    if policy == "ppo":
        policy = PPOPolicy(shipped_model(), broker, reference_equity=max(account.equity, 1.0))
    risk = RiskManager(settings, broker, lambda: 0.5, policy, AtrRule())
    price = float(series.close[-1])
    stop = None
    if stop_atrs is not None:
        stop = price - side.sign * stop_atrs * risk.market("TEST", None).atr
        if stop <= 0:
            stop = None
    d = risk.decide(Signal("s", "TEST", side, confidence, stop_price=stop))

    assert math.isfinite(d.size_usd) and math.isfinite(d.leverage)
    if not d.approved:
        assert d.size_usd == 0 and d.quantity == 0
        return
    tol = 1e-9 * max(1.0, d.size_usd)
    stop_pct = abs(price - d.stop_price) / price
    assert account.equity > 0
    assert 1 <= d.leverage <= min(settings.rm_max_leverage, account.multiplier) + 1e-12
    assert d.size_usd <= settings.rm_max_position_usd + tol
    assert d.size_usd * stop_pct <= account.equity * settings.rm_max_risk_pct + tol
    assert d.size_usd <= account.equity * settings.rm_max_exposure - account.gross_position_value + tol
    assert d.size_usd <= account.buying_power + tol
    assert d.size_usd >= settings.rm_min_position_usd - tol
    assert math.isclose(d.quantity * price, d.size_usd, rel_tol=1e-9)
    assert asset.tradable and asset.market_open
    if not asset.fractionable:
        assert d.quantity == int(d.quantity)
    if not asset.marginable:
        unlevered_bp = account.cash if account.non_marginable_buying_power is None else account.non_marginable_buying_power
        assert d.leverage == 1 and d.size_usd <= unlevered_bp + tol
    if side is Side.SELL:
        assert account.shorting_enabled and asset.shortable


@given(size=st.floats(allow_nan=True, allow_infinity=True), lev=st.floats(allow_nan=True, allow_infinity=True))
def test_caps_only_ever_shrink(size, lev):
    lim = Limits(max_leverage=3, max_position_usd=1e6, min_position_usd=0, max_risk_usd=1e4,
                 stop_distance_pct=0.02, exposure_room_usd=1e7, buying_power=1e7)
    new_size, new_lev, bound = apply_caps(size, lev, lim)
    assert 0 <= new_size <= 1e6 and 1 <= new_lev <= 3
    if math.isfinite(size) and size >= 0:
        assert new_size <= size
    if not bound:
        assert (new_size, new_lev) == (size, lev)
