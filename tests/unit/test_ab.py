"""The live A/B test's assignment (balanced, reproducible from its seed) and its report, checked by hand."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from backend.domain.model import Side, Signal
from backend.evaluation import stats
from backend.evaluation.ab import ArmTrade, arm_summary, report
from backend.sizing.ab import CONTROL, RL, Arms, arm
from backend.sizing.atr import AtrRule
from backend.sizing.fixed import FixedExposure

N = 20_000


@pytest.mark.parametrize("share", [0.5, 0.2, 0.9])
def test_the_split_follows_the_share(share):
    rl = sum(arm(f"sig-{i}", 7, share) == RL for i in range(N))
    assert abs(rl - share * N) <= 4 * math.sqrt(N * share * (1 - share))  # within 4 standard deviations


def test_the_arm_is_reproducible_from_the_seed_and_changes_with_it():
    arms = Arms(FixedExposure(1.0), AtrRule(), 0.5, seed=3, by_symbol=False)
    signals = [Signal(f"sig-{i}", "SP500", Side.BUY, 0.6) for i in range(2_000)]
    first = [arms.assign(s)[0] for s in signals]
    assert first == [arms.assign(s)[0] for s in signals]  # a replayed signal gets the same arm
    assert first == [arm(s.signal_id, 3, 0.5) for s in signals]
    other = [arm(s.signal_id, 4, 0.5) for s in signals]
    assert 0.45 <= sum(a != b for a, b in zip(first, other)) / len(signals) <= 0.55  # another seed: a new draw
    name, policy = arms.assign(signals[0])
    assert policy is (arms.rl if name == RL else arms.control)


def test_by_symbol_every_signal_of_a_symbol_gets_the_same_arm():
    arms = Arms(FixedExposure(1.0), AtrRule(), 0.5, seed=0, by_symbol=True)
    symbols = [f"SYM{k}" for k in range(200)]
    seen = {sym: {arms.assign(Signal(f"{sym}-{i}", sym, Side.BUY, 0.5))[0] for i in range(10)} for sym in symbols}
    assert all(len(a) == 1 for a in seen.values())
    assert 70 <= sum(a == {RL} for a in seen.values()) <= 130


T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


def trade(arm_: str, day: float, equity: float, pnl: float, risk: float | None) -> ArmTrade:
    return ArmTrade(arm_, T0 + timedelta(days=day), equity, pnl, risk)


def test_an_arm_summary_by_hand():
    trades = [trade(CONTROL, 1, 100.0, 10.0, 5.0),  # +10%, 2 R
              trade(CONTROL, 3, 110.0, -11.0, 11.0),  # -10%, -1 R
              trade(CONTROL, 6, 99.0, 0.0, None)]  # sized 0: growth 0, no R, no win or loss
    s = arm_summary(trades)
    assert (s["signals"], s["trades"], s["win_rate"]) == (3, 2, 0.5)
    assert s["avg_r_multiple"] == pytest.approx(0.5)
    assert s["mean_log_growth"] == pytest.approx((math.log(1.1) + math.log(0.9)) / 3)
    assert s["total_pnl"] == pytest.approx(-1.0)
    # its track 1 -> 1.1 -> 0.99 -> 0.99: 10% below the peak of day 1, still under water at day 6
    assert s["max_drawdown"] == pytest.approx(0.1)
    assert s["recovery_days"] == pytest.approx(5.0)
    assert s["sharpe"] == pytest.approx(0.0, abs=1e-12)  # returns +10%, -10%, 0: mean 0


def test_recovery_is_the_longest_time_under_water():
    trades = [trade(RL, 0, 100, -10, 10), trade(RL, 2, 90, 20, 10),  # under from day 0, back above on day 2
              trade(RL, 3, 110, 11, 10), trade(RL, 9, 121, 12, 10)]  # new peaks: no time under water
    assert arm_summary(trades)["recovery_days"] == pytest.approx(2.0)


def test_the_report_compares_the_arms_with_welch():
    rl = [trade(RL, i, 100, pnl, 2.0) for i, pnl in enumerate([3, 1, 4, 2, -1, 3, 5, 2.5])]
    control = [trade(CONTROL, i + 0.5, 100, pnl, 2.0) for i, pnl in enumerate([1, -1, 0.5, -0.5, 1, -1])]
    r = report(rl + control, alpha=0.05, power=0.8, seed=0)
    growth = {RL: [math.log1p(t.pnl / 100) for t in rl], CONTROL: [math.log1p(t.pnl / 100) for t in control]}
    expected = stats.welch(growth[CONTROL], growth[RL])
    d = r["log_growth_difference"]
    assert d["mean"] == pytest.approx(expected.mean) and d["p_value"] == pytest.approx(expected.p_value)
    assert d["p_value"] < 0.05 and r["verdict"] == "RL ahead, significant" and r["trades_still_needed"] == 0
    assert r["arms"][RL]["signals"] == 8 and r["arms"][CONTROL]["signals"] == 6
    r_test = stats.welch([t.pnl / 2 for t in control], [t.pnl / 2 for t in rl])
    assert r["r_multiple_difference"]["mean"] == pytest.approx(r_test.mean)

    swapped = report([ArmTrade(CONTROL if t.arm == RL else RL, t.closed_at, t.equity, t.pnl, t.risk)
                      for t in rl + control], alpha=0.05, power=0.8, seed=0)
    assert swapped["verdict"] == "control ahead, significant"


def test_the_trades_still_needed_by_hand():
    rl = [trade(RL, i, 100, pnl, 1.0) for i, pnl in enumerate([1, -1] * 5)]  # growth +-0.00995: sd 0.01049
    control = [trade(CONTROL, i, 100, pnl, 1.0) for i, pnl in enumerate([1.2, -0.8] * 5)]
    r = report(rl + control, alpha=0.05, power=0.8, seed=0)
    assert r["verdict"] == "not yet significant"
    g_rl = [math.log(1.01), math.log(0.99)] * 5
    g_c = [math.log(1.012), math.log(0.992)] * 5
    effect = sum(g_rl) / 10 - sum(g_c) / 10
    sd = lambda g: math.sqrt(sum((x - sum(g) / len(g)) ** 2 for x in g) / (len(g) - 1))  # noqa: E731
    z = 1.959964 + 0.841621
    needed = z * z * (sd(g_c) ** 2 / 0.5 + sd(g_rl) ** 2 / 0.5) / effect**2
    assert r["trades_still_needed"] == math.ceil(needed) - 20
    assert report([], 0.05, 0.8, 0)["verdict"] == "not yet significant"
    assert report([], 0.05, 0.8, 0)["trades_still_needed"] is None
