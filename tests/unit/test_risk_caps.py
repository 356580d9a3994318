"""No policy output can pass a cap: property tests over states, Q-tables, prices and accounts."""
from __future__ import annotations

import functools
import math
import random

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from backend.config import Settings
from backend.domain.model import Account, AssetRules, Proposal, Side, Signal
from backend.domain.rewards import log_growth_reward
from backend.domain.state import action_key, exposure_menu
from backend.risk import RiskManager, SizingError, apply_caps
from backend.risk.trading_state import Status, TradingState
from backend.rl import checkpoint
from backend.sizing.ab import Arms
from backend.sizing.atr import AtrRule
from backend.sizing.fixed import FixedExposure
from backend.sizing.ppo import PPOPolicy, PPOSizingPolicy
from backend.sizing.qlearning import Cell, KellyPolicy, QLearningPolicy
from tests.conftest import make_settings
from tests.fakes import StaticBroker, random_walk

finite = dict(allow_nan=False, allow_infinity=False)


class HostilePolicy:
    """Returns whatever hypothesis draws: huge, tiny, negative, NaN, infinite."""

    name = "hostile"

    def __init__(self, exposure: float) -> None:
        self.exposure = exposure

    def propose(self, ctx) -> Proposal:
        return Proposal(self.exposure, self.name, "anything")


class RandomQTable:
    """The same drawn cells for every state and pooled level asked for."""

    def __init__(self, cells: dict[str, Cell], epsilon: float) -> None:
        self.cells, self.eps = cells, epsilon

    def q_cells(self, state_keys):
        return {k: self.cells for k in state_keys}, self.eps


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
    "rm_max_position_exposure": st.floats(0.05, 10, **finite),
    "rm_max_position_usd": st.one_of(st.none(), st.floats(1_000, 1e7, **finite)),
    "rm_min_position_usd": st.floats(0, 1_000, **finite),
    "rm_risk_per_trade_pct": st.floats(0.001, 0.01, **finite),
    "rm_max_risk_pct": st.floats(0.01, 0.3, **finite),
    "rm_max_exposure": st.floats(0.05, 10, **finite),
})
MENU = exposure_menu(10.0)
cells = st.dictionaries(
    st.sampled_from([action_key(e) for e in MENU]),
    st.builds(lambda w, s1, s2, n: Cell(w, s1, abs(s2), n), st.floats(0, 1e4, **finite), st.floats(-1e5, 1e5, **finite),
              st.floats(0, 1e7, **finite), st.integers(0, 10_000)),
)
policies = st.one_of(
    st.builds(HostilePolicy, st.floats(allow_nan=True, allow_infinity=True)),
    st.builds(
        lambda q, eps, seed, z: QLearningPolicy(RandomQTable(q, eps), MENU, log_growth_reward, confidence_z=z,
                                                prior_trades=50, horizon_trades=None, maintenance=0.25,
                                                rng=random.Random(seed)),
        cells, st.floats(0, 1, **finite), st.integers(0, 2**32), st.floats(0, 3, **finite),
    ),
    st.builds(lambda q, f: KellyPolicy(RandomQTable(q, 0.0), MENU, f), cells, st.floats(0.1, 1, **finite)),
    st.builds(FixedExposure, st.floats(0.01, 20, **finite)),
    st.just(AtrRule()),
    st.sampled_from(("sizing", "trading")),  # the shipped PPO checkpoints, built per example around its broker
)


@functools.cache
def shipped_model(kind: str):
    path = Settings().sizing.model_path
    return checkpoint.load(path if kind == "sizing" else path.parents[1] / "ppo-trader" / "model.pt", kind=kind)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(account=accounts, limits=caps, policy=policies, price_scale=st.floats(0.01, 1e5, **finite),
       confidence=st.floats(0, 1, **finite), side=st.sampled_from(Side), asset=assets,
       stop_atrs=st.one_of(st.none(), st.floats(0.05, 10, **finite)), seed=st.integers(0, 1000),
       claimed=st.one_of(st.none(), st.tuples(st.just("ratio"), st.floats(0.9, 1.1, **finite)),
                         st.tuples(st.just("absolute"), st.floats(5e-324, 1e9, **finite))),
       trading_state=st.sampled_from(TradingState), in_flight_frac=st.floats(0, 4, **finite),
       ab=st.one_of(st.none(), st.tuples(st.floats(0.01, 0.99, **finite),
                                         st.floats(allow_nan=True, allow_infinity=True), st.booleans())))
def test_no_policy_output_passes_a_cap(account, limits, policy, price_scale, confidence, side, asset,
                                       stop_atrs, seed, claimed, trading_state, in_flight_frac, ab):
    """`claimed`: the signal's own price, near the market's or any value at all. `in_flight`: entry orders sent,
    not yet in the positions. `ab`: a live A/B test whose control arm is hostile (share, its exposure, by
    symbol)."""
    settings = make_settings(**limits)
    series = random_walk(400, start=price_scale, seed=seed)
    broker = StaticBroker(account, series, asset)
    if policy == "sizing":
        policy = PPOSizingPolicy(shipped_model(policy), broker, max(account.equity, 1.0), 240.0)
    elif policy == "trading":
        policy = PPOPolicy(shipped_model(policy), broker, reference_equity=max(account.equity, 1.0))
    status = Status(trading_state, "test", "drawn", None)
    arms = None if ab is None else Arms(policy, HostilePolicy(ab[1]), ab[0], seed, ab[2])
    in_flight = in_flight_frac * max(account.equity, 0.0)
    risk = RiskManager(settings.risk, settings.state.bucket_edges(), broker, lambda: 0.5, policy, AtrRule(),
                       lambda: status, lambda since: in_flight, arms)
    price = float(series.close[-1])
    stop = None
    if stop_atrs is not None:
        stop = price - side.sign * stop_atrs * risk.market("TEST", None).atr
        if stop <= 0:
            stop = None
    signal_price = None if claimed is None else claimed[1] * price if claimed[0] == "ratio" else claimed[1]
    try:
        d = risk.decide(Signal("s", "TEST", side, confidence, price=signal_price, stop_price=stop))
    except SizingError as exc:  # a price away from the market's is refused, never sized on
        assert exc.field == "price" and abs(signal_price / price - 1) > settings.risk.max_price_deviation
        return

    assert d.price == price  # caps, stops and quantities are computed on the market's price, whatever was claimed
    assert d.arm == (None if arms is None else arms.assign(Signal("s", "TEST", side, confidence))[0])
    assert math.isfinite(d.size_usd) and math.isfinite(d.leverage)
    if not d.approved:
        assert d.size_usd == 0 and d.quantity == 0 and d.exposure == 0
        return
    tol = 1e-9 * max(1.0, d.size_usd)
    stop_pct = abs(price - d.stop_price) / price
    assert account.equity > 0 and trading_state is TradingState.ACTIVE  # REDUCING, HALTED: no new exposure
    assert math.isclose(d.exposure, d.size_usd / account.equity) and d.leverage == max(1.0, d.exposure)
    assert 1 <= d.leverage <= min(settings.risk.max_leverage, account.multiplier) + 1e-12
    assert d.size_usd <= settings.risk.max_position_exposure * account.equity + tol
    if settings.risk.max_position_usd is not None:
        assert d.size_usd <= settings.risk.max_position_usd + tol
    assert d.size_usd * stop_pct <= account.equity * settings.risk.max_risk_pct + tol
    assert d.size_usd <= account.equity * settings.risk.max_exposure - account.gross_position_value - in_flight + tol
    assert d.size_usd <= account.buying_power + tol
    assert d.size_usd >= settings.risk.min_position_usd - tol
    assert math.isclose(d.quantity * price, d.size_usd, rel_tol=1e-9)
    assert asset.tradable and asset.market_open
    if not asset.fractionable:
        assert d.quantity == int(d.quantity)
    if not asset.marginable:
        unlevered_bp = account.cash if account.non_marginable_buying_power is None else account.non_marginable_buying_power
        assert d.leverage == 1 and d.size_usd <= unlevered_bp + tol
    if side is Side.SELL:
        assert account.shorting_enabled and asset.shortable


@given(size=st.floats(allow_nan=True, allow_infinity=True),
       limits=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.floats(0, 1e7, **finite), min_size=1))
def test_caps_only_ever_shrink(size, limits):
    new_size, bound = apply_caps(size, limits)
    assert 0 <= new_size <= min(limits.values())
    if math.isfinite(size) and size >= 0:
        assert new_size <= size
        assert set(bound) == {name for name, limit in limits.items() if size > limit}
    else:
        assert bound == ("invalid_size",) and new_size == 0
    if not bound:
        assert new_size == size
