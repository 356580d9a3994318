"""The comparison statistics against values worked out by hand (and scipy.stats where it has the same test)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp

from backend.evaluation.stats import paired, trades_for_power, welch


def test_welch_by_hand():
    a, b = [1, 2, 3, 4], [2, 4, 6, 8, 10]
    # means 2.5 and 6; variances 5/3 and 10; squared standard errors 5/12 and 2
    se2 = 5 / 12 + 2
    df = se2**2 / ((5 / 12) ** 2 / 3 + 2**2 / 4)
    r = welch(a, b)
    assert r.n == 9 and r.mean == pytest.approx(3.5)
    assert r.t == pytest.approx(3.5 / math.sqrt(se2)) and r.t == pytest.approx(2.25144, abs=1e-5)
    assert r.df == pytest.approx(df) and r.df == pytest.approx(5.520788, abs=1e-6)
    scipy = sp.ttest_ind(b, a, equal_var=False)
    assert r.t == pytest.approx(scipy.statistic) and r.p_value == pytest.approx(scipy.pvalue)
    half = sp.t.ppf(0.975, df) * math.sqrt(se2)
    assert r.ci == pytest.approx((3.5 - half, 3.5 + half))


def test_paired_t_by_hand():
    a, b = [1, 2, 3, 4, 5], [2, 4, 3, 7, 6]  # differences 1, 2, 0, 3, 1: mean 1.4, variance 5.2 / 4 = 1.3
    r = paired(a, b)
    se = math.sqrt(1.3 / 5)
    assert (r.n, r.df) == (5, 4) and r.mean == pytest.approx(1.4)
    assert r.t == pytest.approx(1.4 / se) and r.t == pytest.approx(2.745626, abs=1e-6)
    # t(0.975, 4) = 2.776445 > t: not significant at 5%, and the 95% interval just reaches below 0
    assert r.ci == pytest.approx((1.4 - 2.776445 * se, 1.4 + 2.776445 * se), abs=1e-6)
    assert r.ci[0] < 0 and 0.05 < r.p_value < 0.06
    assert r.p_value == pytest.approx(sp.ttest_rel(b, a).pvalue)


def test_bootstrap_intervals_by_hand():
    """Five ones and five zeros: a resample's mean is Binomial(10, 1/2) / 10, whose 2.5% and 97.5% quantiles
    are 2/10 and 8/10 (P(X <= 1) = 1.1%, P(X <= 2) = 5.5%, and symmetrically)."""
    ones = [1.0] * 5 + [0.0] * 5
    assert paired([0.0] * 10, ones, seed=3).bootstrap_ci == (0.2, 0.8)
    assert welch([0.0, 0.0], ones, seed=3).bootstrap_ci == (0.2, 0.8)  # the constant sample adds nothing
    assert welch(ones, [0.0, 0.0], seed=3).bootstrap_ci == (-0.8, -0.2)


def test_bootstrap_is_reproducible_from_its_seed_and_agrees_with_scipy():
    rng = np.random.default_rng(11)
    a, b = rng.normal(0, 1, 60), rng.normal(0.3, 2, 60)
    first, again, other = paired(a, b, seed=5), paired(a, b, seed=5), paired(a, b, seed=6)
    assert first.bootstrap_ci == again.bootstrap_ci != other.bootstrap_ci
    scipy = sp.bootstrap((b - a,), np.mean, method="percentile", n_resamples=10_000, random_state=1)
    assert first.bootstrap_ci == pytest.approx(tuple(scipy.confidence_interval), abs=0.03)
    # with this many pairs the bootstrap and t intervals nearly agree
    assert first.bootstrap_ci == pytest.approx(first.ci, abs=0.05)


def test_no_spread_and_too_few():
    same = paired([1.0, 2.0], [1.0, 2.0])  # identical: no difference at all
    assert same.p_value == 1.0 and same.t is None
    r = paired([1.0, 2.0], [1.5, 2.5])  # a constant difference: certain
    assert r.p_value == 0.0 and r.t is None and r.ci == (0.5, 0.5)
    assert paired([1.0], [2.0]) is None and welch([1.0], [2.0, 3.0]) is None


def test_trades_for_power_by_hand_and_by_simulation():
    z = 1.959964 + 0.841621  # z(0.975) + z(0.8)
    # the textbook 2 z^2 sd^2 / effect^2 per arm, for two equal arms
    assert trades_for_power(0.1, 1.0, 1.0, 0.5) == pytest.approx(2 * 2 * z * z / 0.01, rel=1e-5)
    assert trades_for_power(0.1, 1.0, 1.0, 0.25) == pytest.approx(z * z * (1 / 0.75 + 1 / 0.25) / 0.01, rel=1e-5)
    assert trades_for_power(0.0, 1.0, 1.0, 0.5) == math.inf
    # that many trades find a true effect of 0.5 standard deviations about 80% of the time
    n = math.ceil(trades_for_power(0.5, 1.0, 1.0, 0.5) / 2)
    rng = np.random.default_rng(0)
    found = sp.ttest_ind(rng.normal(0.5, 1, (4000, n)), rng.normal(0, 1, (4000, n)), axis=1,
                         equal_var=False).pvalue < 0.05
    assert 0.76 <= found.mean() <= 0.84
