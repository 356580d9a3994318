"""Metric functions against values worked out by hand."""
import math

import numpy as np
import pytest

from backend.evaluation import metrics
from backend.evaluation.baselines import kelly_fraction
from backend.evaluation.tracks import Track, chain, weights_track

# returns +10%, -10%, +10%: mean 1/30, sample stdev sqrt(0.02667 / 2) = 0.11547, downside rms sqrt(0.01 / 3)
EQUITY = np.array([1.0, 1.1, 0.99, 1.089])


def test_track_metrics_by_hand():
    s = metrics.score(EQUITY, exposure=np.array([1.0, 0.5, 0.0]), turnover=np.array([1.0, 0.0, 0.5]))
    assert s["total_return"] == pytest.approx(0.089)
    assert s["sharpe"] == pytest.approx(0.288675 * math.sqrt(252), rel=1e-5)
    assert s["sortino"] == pytest.approx(0.577350 * math.sqrt(252), rel=1e-5)
    assert s["max_drawdown"] == pytest.approx(0.1)  # 1.1 -> 0.99
    assert s["annual_return"] == pytest.approx(1.089 ** 84 - 1)  # 3 bars = 1/84 of a year
    assert s["calmar"] == pytest.approx(s["annual_return"] / 0.1)
    assert s["log_growth"] == pytest.approx(math.log(1.089))
    assert s["turnover"] == pytest.approx(0.5) and s["avg_exposure"] == pytest.approx(0.5)


def test_flat_track_scores_zero_not_nan():
    s = metrics.score(np.ones(5), np.zeros(4), np.zeros(4))
    assert s["sharpe"] == s["sortino"] == s["max_drawdown"] == s["calmar"] == 0.0


def test_deflated_sharpe_known_cases():
    # one trial: the PSR against 0. sr 0.1 over 101 normal returns: z = 0.1 x sqrt(100) / sqrt(1 + 0.5 x 0.01)
    # = 0.99751, Phi(0.99751) = 0.84074
    assert metrics.deflated_sharpe(0.1, 101, 0.0, 3.0, 0.0, 1) == pytest.approx(0.84074, abs=1e-4)
    # ten trials whose Sharpe estimates vary by 0.01: SR0 = 0.1 x (0.42278 x Phi^-1(0.9) + 0.57722 x
    # Phi^-1(1 - 1 / (10 e))) = 0.1 x (0.42278 x 1.28155 + 0.57722 x 1.78924) = 0.15746;
    # z = (0.1 - 0.15746) x 10 / 1.00250 = -0.57318, Phi = 0.28327
    assert metrics.expected_max_sharpe(0.01, 10) == pytest.approx(0.15746, abs=1e-4)
    assert metrics.deflated_sharpe(0.1, 101, 0.0, 3.0, 0.01, 10) == pytest.approx(0.28327, abs=1e-4)
    # negative skew and fat tails widen the estimate's error: the same Sharpe is less convincing
    assert metrics.deflated_sharpe(0.1, 101, -2.0, 9.0, 0.0, 1) < 0.84074


def test_constant_weights_pay_costs_once_to_buy_in_and_drift_is_rebalanced():
    close = np.array([[100.0, 110.0, 110.0], [100.0, 100.0, 100.0]])
    t = weights_track(close, np.array([0.5, 0.5]), cost_rate=0.001)
    # bar 1: buy in (traded 1.0, cost 0.1%), gain 5%; weights drift to 0.55/1.05, 0.5/1.05
    assert t.equity[1] == pytest.approx(0.999 * 1.05)
    assert t.turnover[0] == pytest.approx(1.0)
    assert t.turnover[1] == pytest.approx(abs(0.5 - 0.55 / 1.05) + abs(0.5 - 0.5 / 1.05))
    assert t.equity[2] == pytest.approx(t.equity[1] * (1 - 0.001 * t.turnover[1]))


def test_kelly_fraction_is_mean_over_variance_of_training_returns():
    # one asset alternating +2% / -1%: mean 0.005, sample variance 0.000225 x 4 / 3 -> f = 16.7, capped at 2
    close = np.array([[100.0, 102.0, 100.98, 103.0, 101.97]])
    assert kelly_fraction(close) == 2.0
    # +1%, -1%, +1%, -0.9%: mean 0.00025, deviations 0.00975, -0.01025, 0.00975, -0.00925, sample variance
    # 3.8075e-4 / 3 = 1.26917e-4 -> f = 1.96980
    close = 100 * np.cumprod([1.0, 1.01, 0.99, 1.01, 0.991])[None, :]
    assert kelly_fraction(close) == pytest.approx(1.96980, rel=1e-4)
    assert kelly_fraction(close[:, ::-1]) == 0.0  # a losing training window: no position, never short


def test_chained_windows_compound():
    a = Track(np.array([1.0, 1.1]), np.array([1.0]), np.array([0.0]))
    b = Track(np.array([1.0, 0.5, 1.2]), np.array([1.0, 1.0]), np.array([0.0, 0.0]))
    assert chain([a, b]).equity.tolist() == pytest.approx([1.0, 1.1, 0.55, 1.32])
