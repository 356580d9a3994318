"""The generated markets say what they claim: their trades' returns, their f*, their oracle."""
import numpy as np
import pytest

from backend.data.synthetic import WARMUP, Case, coin_case, market, truth


def trade_returns(case: Case, seed: int = 0) -> np.ndarray:
    """What a trade entering at the open after its signal and leaving at the open after its time limit makes."""
    m = market(case, seed)
    starts = WARMUP + case.period * np.arange(case.trades)
    return m.series.open[starts + case.period] / m.series.open[starts + 1] - 1


def test_a_coin_trade_gains_or_loses_a_with_the_stated_odds_and_its_stop_never_binds():
    case = coin_case(f_star=1.5, t500=6, trades=4000)
    r = trade_returns(case)
    assert np.abs(np.abs(r) - case.a).max() < 0.02  # +-a, up to the bar noise
    assert (r > 0).mean() == pytest.approx(case.p, abs=0.02)
    m = market(case, 0)
    stops = np.array([s.stop_price for s in m.signals])
    starts = WARMUP + case.period * np.arange(case.trades)
    held_low = np.minimum(m.series.low[starts + 1], m.series.low[starts + 2])
    assert (held_low > stops).all()
    assert case.t500 == pytest.approx(6, rel=0.02)


def test_the_truth_knows_the_growth_optimal_exposure():
    case = coin_case(f_star=3.0, t500=6, trades=10)
    t = truth(case, maintenance=0.1, samples=50_000)
    assert t.f_star["all"] == pytest.approx(3.0, rel=0.01)
    assert t.oracle("all") == pytest.approx(3.0, rel=0.1)  # costs and the log's skew move it a little
    assert t.at("all", 0.0) == 0 and t.at("all", 2 * t.oracle("all")) < 0.1 * t.growth["all"].max()
    fair = truth(Case("fair", "coin", 10, p=0.5, a=0.05), maintenance=0.1, samples=50_000)
    assert fair.oracle("all") == 0 and fair.f_star["all"] == 0


def test_informative_confidence_has_a_kelly_exposure_per_bucket_rising_from_zero():
    t = truth(Case("c", "confidence", 10, a=0.08), maintenance=0.1, samples=50_000)
    oracles = [t.oracle(b) for b in ("very_low", "low", "medium", "high", "very_high")]
    assert oracles[0] == 0 and all(a < b for a, b in zip(oracles, oracles[1:]))


def test_a_drift_market_has_its_drift_and_volatility():
    case = Case("d", "drift", 3000, mu=0.20, sigma=0.20)
    m = market(case, 1)
    daily = np.diff(np.log(m.series.close))
    assert daily.std() * np.sqrt(252) == pytest.approx(0.20, rel=0.05)
    r = trade_returns(case, 1)
    assert r.mean() == pytest.approx(0.20 / 252 * 4, abs=3 * r.std() / np.sqrt(len(r)))
