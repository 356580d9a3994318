
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.indicators import (
    IncrementalWilder,
    InsufficientData,
    min_bars,
    wilder_atr_adx,
)


# --- an independent reference, written as literally as the definitions read -------------------------------------

def reference_atr_adx(high, low, close, period):
    """Every series as a full list, then the last values; no shared code with backend.indicators."""
    H, L, C, p = list(high), list(low), list(close), period
    tr, plus_dm, minus_dm = [], [], []
    for t in range(1, len(H)):
        tr.append(max(H[t] - L[t], abs(H[t] - C[t - 1]), abs(L[t] - C[t - 1])))
        up = H[t] - H[t - 1]
        down = L[t - 1] - L[t]
        plus_dm.append(up if (up > down and up > 0) else 0.0)
        minus_dm.append(down if (down > up and down > 0) else 0.0)

    atr = [sum(tr[:p]) / p]
    for x in tr[p:]:
        atr.append((atr[-1] * (p - 1) + x) / p)

    def wilder_sum(xs):
        s = [sum(xs[:p])]
        for x in xs[p:]:
            s.append(s[-1] - s[-1] / p + x)
        return s

    s_tr, s_plus, s_minus = wilder_sum(tr), wilder_sum(plus_dm), wilder_sum(minus_dm)
    dx = []
    for i in range(len(s_tr)):
        plus_di = 100 * s_plus[i] / s_tr[i] if s_tr[i] != 0 else 0.0
        minus_di = 100 * s_minus[i] / s_tr[i] if s_tr[i] != 0 else 0.0
        total = plus_di + minus_di
        dx.append(100 * abs(plus_di - minus_di) / total if total != 0 else 0.0)

    adx = [sum(dx[:p]) / p]
    for x in dx[p:]:
        adx.append((adx[-1] * (p - 1) + x) / p)
    return atr[-1], adx[-1]


def random_ohlc(rng, n, start=100.0, vol=0.02):
    """A random walk with gaps: high >= max(open, close), low <= min(open, close)."""
    close = start * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    prev_close = np.concatenate([[start], close[:-1]])
    open_ = prev_close * np.exp(rng.normal(0.0, vol / 4, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, vol / 2, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, vol / 2, n)))
    return open_, high, low, close


@pytest.mark.parametrize("period", [1, 2, 5, 14, 20])
@pytest.mark.parametrize("extra", [0, 1, 7, 70, 300])
def test_matches_the_reference_on_random_walks(period, extra):
    rng = np.random.default_rng(20240611 + 31 * period + extra)
    n = min_bars(period) + extra
    _, high, low, close = random_ohlc(rng, n)
    atr, adx = wilder_atr_adx(high, low, close, period)
    ref_atr, ref_adx = reference_atr_adx(high, low, close, period)
    assert np.isclose(atr, ref_atr, rtol=1e-9, atol=0)
    assert np.isclose(adx, ref_adx, rtol=1e-9, atol=1e-12)
    assert isinstance(atr, float) and isinstance(adx, float)


def test_matches_the_reference_at_every_length():
    rng = np.random.default_rng(7)
    _, high, low, close = random_ohlc(rng, 120, vol=0.03)
    for n in range(min_bars(14), 121):
        atr, adx = wilder_atr_adx(high[:n], low[:n], close[:n], 14)
        ref_atr, ref_adx = reference_atr_adx(high[:n], low[:n], close[:n], 14)
        assert np.isclose(atr, ref_atr, rtol=1e-9, atol=0)
        assert np.isclose(adx, ref_adx, rtol=1e-9, atol=1e-12)


# --- incremental == batch ---------------------------------------------------------------------------------------

@st.composite
def bar_sequences(draw):
    period = draw(st.integers(min_value=1, max_value=10))
    n = draw(st.integers(min_value=min_bars(period), max_value=min_bars(period) + 40))
    price = st.floats(min_value=1.0, max_value=1e4, allow_nan=False, allow_infinity=False)
    span = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)
    where = st.floats(min_value=0.0, max_value=1.0)
    bars = draw(st.lists(st.tuples(price, span, where), min_size=n, max_size=n))
    low = np.array([b[0] for b in bars])
    high = low + np.array([b[1] for b in bars])
    close = low + np.array([b[2] for b in bars]) * (high - low)
    return period, high, low, close


@settings(max_examples=200, deadline=None)
@given(bar_sequences())
def test_incremental_and_batch_agree_and_stay_in_range(case):
    period, high, low, close = case
    live = IncrementalWilder(period)
    for i, (h, l, c) in enumerate(zip(high, low, close)):
        live.update(h, l, c)
        n = i + 1
        if n >= min_bars(period):
            # exactly the same numbers as a batch recomputation over the same bars
            assert (live.atr, live.adx) == wilder_atr_adx(high[:n], low[:n], close[:n], period)
    atr, adx = wilder_atr_adx(high, low, close, period)
    assert atr > 0
    assert 0.0 <= adx <= 100.0
    ref_atr, ref_adx = reference_atr_adx(high, low, close, period)
    assert np.isclose(atr, ref_atr, rtol=1e-9, atol=0)
    assert np.isclose(adx, ref_adx, rtol=1e-9, atol=1e-9)


def test_incremental_warm_up():
    period = 5
    live = IncrementalWilder(period)
    for n in range(1, min_bars(period) + 1):
        live.update(11.0 + n, 9.0 + n, 10.0 + n)
        if n < period + 1:
            with pytest.raises(InsufficientData):
                live.atr
        else:
            assert live.atr == 2.0
        if n < min_bars(period):
            with pytest.raises(InsufficientData):
                live.adx
    assert live.adx == 100.0


def test_incremental_rejects_a_bad_bar_and_keeps_its_state():
    rng = np.random.default_rng(3)
    _, high, low, close = random_ohlc(rng, 40)
    live = IncrementalWilder(14)
    for bar in zip(high, low, close):
        live.update(*bar)
    before = (live.bars, live.atr, live.adx)
    for bad in [(float("nan"), 1.0, 1.0), (2.0, 1.0, float("inf")), (2.0, 0.0, 1.0), (1.0, 2.0, 1.5), (2.0, 1.0, -1.0)]:
        with pytest.raises(ValueError):
            live.update(*bad)
    assert (live.bars, live.atr, live.adx) == before


# --- hand-checkable cases ---------------------------------------------------------------------------------------

def test_constant_true_range_gives_that_atr_exactly():
    n = 60
    high, low, close = np.full(n, 11.0), np.full(n, 9.0), np.full(n, 10.0)
    atr, adx = wilder_atr_adx(high, low, close, 14)
    assert atr == 2.0
    assert adx == 0.0  # no directional movement at all


def test_steady_rise_is_a_full_trend():
    n, step = 60, 1.0
    t = np.arange(n, dtype=float)
    high, low, close = 12.0 + step * t, 10.0 + step * t, 11.0 + step * t
    atr, adx = wilder_atr_adx(high, low, close, 14)
    assert atr == 2.0  # TR = max(2, |H - C'| = 2, |L - C'| = 0) = 2 on every bar
    assert adx == pytest.approx(100.0, abs=1e-9)  # -DM is always 0


def test_steady_fall_is_a_full_trend_too():
    n = 60
    t = np.arange(n, dtype=float)
    high, low, close = 100.0 - t, 98.0 - t, 99.0 - t
    atr, adx = wilder_atr_adx(high, low, close, 14)
    assert atr == 2.0
    assert adx == pytest.approx(100.0, abs=1e-9)


def test_alternating_bars_have_a_low_adx():
    n = 80
    up = np.arange(n) % 2 == 0
    high = np.where(up, 12.0, 11.0)
    low = np.where(up, 10.0, 9.0)
    close = np.where(up, 11.5, 9.5)
    atr, adx = wilder_atr_adx(high, low, close, 14)
    assert 2.0 <= atr <= 2.5
    assert adx < 10.0
    ref_atr, ref_adx = reference_atr_adx(high, low, close, 14)
    assert np.isclose(adx, ref_adx, rtol=1e-9, atol=1e-12)


def test_flat_prices_give_zero_atr_and_zero_adx():
    n = min_bars(14)
    flat = np.full(n, 50.0)
    assert wilder_atr_adx(flat, flat, flat, 14) == (0.0, 0.0)


def test_min_bars():
    assert min_bars(14) == 29
    assert min_bars(1) == 3


# --- real data --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sp500():
    import arch.data.sp500

    return arch.data.sp500.load()


def _atr_pct_adx(df, end):
    bars = df.loc[:end].iloc[-100:]
    atr, adx = wilder_atr_adx(bars["High"].to_numpy(), bars["Low"].to_numpy(), bars["Close"].to_numpy(), 14)
    return atr / bars["Close"].iloc[-1], adx


def test_sp500_october_2008_is_far_more_volatile_than_mid_2017(sp500):
    crash_atr, crash_adx = _atr_pct_adx(sp500, "2008-10-31")
    calm_atr, calm_adx = _atr_pct_adx(sp500, "2017-06-30")
    assert 0.03 <= crash_atr <= 0.08  # about 6% a day at the end of October 2008
    assert 0.003 <= calm_atr <= 0.01  # about 0.5-0.7% a day in mid 2017
    assert crash_atr > 5 * calm_atr
    assert 0.0 <= crash_adx <= 100.0 and 0.0 <= calm_adx <= 100.0


# --- errors -----------------------------------------------------------------------------------------------------

def _bars(n, seed=5):
    _, high, low, close = random_ohlc(np.random.default_rng(seed), n)
    return high, low, close


def test_too_few_bars_is_insufficient_data():
    high, low, close = _bars(min_bars(14) - 1)
    with pytest.raises(InsufficientData, match="needs 29 bars, have 28"):
        wilder_atr_adx(high, low, close, 14)
    assert issubclass(InsufficientData, ValueError)
    with pytest.raises(InsufficientData):
        wilder_atr_adx(np.array([]), np.array([]), np.array([]))
    high, low, close = _bars(min_bars(14))
    wilder_atr_adx(high, low, close, 14)  # exactly enough


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 0.0, -5.0])
@pytest.mark.parametrize("which", [0, 1, 2])
def test_non_finite_or_non_positive_prices_are_rejected(bad, which):
    series = [a.copy() for a in _bars(40)]
    series[which][17] = bad
    with pytest.raises(ValueError) as info:
        wilder_atr_adx(*series, 14)
    assert not isinstance(info.value, InsufficientData)


def test_high_below_low_is_rejected():
    high, low, close = _bars(40)
    high[20], low[20] = low[20], high[20] + 1.0
    with pytest.raises(ValueError, match="below low"):
        wilder_atr_adx(high, low, close, 14)


def test_mismatched_or_misshapen_inputs_are_rejected():
    high, low, close = _bars(40)
    with pytest.raises(ValueError, match="length"):
        wilder_atr_adx(high, low[:-1], close, 14)
    with pytest.raises(ValueError, match="one-dimensional"):
        wilder_atr_adx(high.reshape(4, 10), low.reshape(4, 10), close.reshape(4, 10), 2)


@pytest.mark.parametrize("period", [0, -3, 2.5, True, None])
def test_bad_period_is_rejected(period):
    high, low, close = _bars(40)
    with pytest.raises(ValueError, match="period"):
        wilder_atr_adx(high, low, close, period)
    with pytest.raises(ValueError, match="period"):
        IncrementalWilder(period)
