import numpy as np
import pytest

from backend.data.bundled import load_bundled
from backend.domain.bars import Series
from backend.rl.observation import (
    HISTORY_BARS,
    ObservationSpec,
    SpecMismatch,
    fit_spec,
    live_market_window,
    market_features,
    normalise,
)


def cut(s: Series, a: int, b: int) -> Series:
    return Series(s.symbol, s.ts[a:b], s.open[a:b], s.high[a:b], s.low[a:b], s.close[a:b], s.volume[a:b])


@pytest.fixture(scope="module")
def spx():
    return load_bundled("SP500")


def test_features_are_causal(spx):
    full = market_features(spx.open, spx.high, spx.low, spx.close, spx.volume)
    t = 1000
    future_changed = spx.close.copy()
    future_changed[t + 1:] *= 1.5
    again = market_features(spx.open, spx.high, spx.low, future_changed, spx.volume)
    np.testing.assert_array_equal(full[: t + 1], again[: t + 1])
    assert np.isnan(full[:50]).all() and np.isfinite(full[50:]).all()


def test_live_window_equals_the_training_rows(spx):
    """No train/serve skew: the live builder on recent bars gives the rows training used."""
    full = market_features(spx.open, spx.high, spx.low, spx.close, spx.volume)
    spec = fit_spec(full[:3000], window=32)
    table = normalise(spec, full)
    for t in (2000, 4000, len(spx) - 1):
        live, valid = live_market_window(spec, cut(spx, t + 1 - 32 - HISTORY_BARS, t + 1))
        assert valid
        np.testing.assert_allclose(live.numpy(), table[t - 31: t + 1].ravel(), atol=1e-4)


def test_spec_round_trip_and_mismatch():
    spec = ObservationSpec(window=8, mean=(0.0,) * 10, std=(1.0,) * 10)
    assert ObservationSpec.from_dict(spec.to_dict()) == spec
    assert spec.size == 8 * 10 + 5
    stale = {**spec.to_dict(), "version": 0}
    with pytest.raises(SpecMismatch, match="retrain"):
        ObservationSpec.from_dict(stale)
    renamed = {**spec.to_dict(), "market_features": ["log_return"] * 10}
    with pytest.raises(SpecMismatch):
        ObservationSpec.from_dict(renamed)


def test_spec_statistics_come_only_from_the_rows_given(spx):
    full = market_features(spx.open, spx.high, spx.low, spx.close, spx.volume)
    early, late = fit_spec(full[:2000], 16), fit_spec(full[3000:], 16)
    assert early.mean != late.mean
    rows = full[:2000][np.all(np.isfinite(full[:2000]), axis=1)]
    np.testing.assert_allclose(early.mean, rows.mean(axis=0))
