"""`sizer evaluate` end to end on the CPU: the report's keys, valid PNG plots, clear errors for bad input."""
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from backend.cli import cli
from backend.data.bundled import load_bundled
from backend.evaluation.report import PLOTS
from backend.evaluation.tracks import replay_track
from backend.evaluation.walkforward import windows

MODEL = Path(__file__).resolve().parents[2] / "models" / "ppo-trader" / "model.pt"
PNG = b"\x89PNG\r\n\x1a\n"


def test_evaluate_a_checkpoint_writes_the_report_and_plots(tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", "--policy", str(MODEL), "--out", str(tmp_path),
                                      "--max-windows", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    window = report["windows"][0]
    assert window["test"]["start"] > "2012-12-31"  # only bars after the checkpoint's training end
    assert set(window["scores"]) == {"checkpoint", "cash", "buy_hold_SP500", "buy_hold_NASDAQ", "equal_weight",
                                     "atr_rule", "kelly"}
    for key in ("total_return", "annual_return", "sharpe", "sortino", "max_drawdown", "calmar", "turnover",
                "avg_exposure", "log_growth", "log_growth_vs_kelly", "deflated_sharpe", "rank"):
        assert key in window["scores"]["checkpoint"], key
    assert set(window["criteria"]) == {"sharpe_non_negative", "sharpe_vs_best_buy_hold", "turnover_at_most_50pct",
                                       "rank_in_top_half"}
    assert window["collapse"]["alerts"] is not None and report["aggregate"]["windows"] == 1
    assert "skipped" in report["notes"][0]
    for name in PLOTS:
        assert (tmp_path / name).read_bytes()[:8] == PNG
    assert "sharpe_non_negative" in result.output
    verdict = next(line for line in result.output.splitlines() if "sharpe_non_negative" in line)
    assert "aggregate" in verdict and "single windows passing" in verdict and verdict.rstrip().endswith("/1")


def test_evaluate_the_regime_trader_trains_per_window_and_plots_its_regimes(tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", "--policy", "regime", "--steps", "4096", "--out", str(tmp_path),
                                      "--max-windows", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    window = report["windows"][0]
    assert {"regime", "equal_weight", "buy_hold_SP500", "buy_hold_NASDAQ", "kelly"} <= set(window["scores"])
    assert report["cost_bps"] == pytest.approx(3.0) and report["aggregate"]["windows"] == 1
    assert set(window["criteria"]) == {"sharpe_non_negative", "sharpe_vs_best_buy_hold", "turnover_at_most_50pct",
                                       "rank_in_top_half"}
    assert "dominance" in window["collapse"]
    for name in PLOTS:
        assert (tmp_path / name).read_bytes()[:8] == PNG


def test_the_q_agent_learns_from_the_first_bars_the_indicators_allow():
    """The first window trains from the data's first year, whose first bars only warm the indicators up."""
    ts = load_bundled("SP500").ts
    first = windows(ts, train_years=1, test_years=1)[0]
    assert str(ts[first.train_start].astype("datetime64[D]")) == "1999-01-04"
    track = replay_track("qlearning", ts[first.track_rows], train=ts[first.train_start:first.train_end + 1])
    assert len(track.equity) == first.test_end - first.test_start + 2 and track.equity[0] == 1.0
    assert np.isfinite(track.equity).all() and (track.exposure <= 3 + 1e-9).all()
    atr = replay_track("atr", ts[first.track_rows])
    assert (atr.turnover > 0).any()  # the same signals traded by the rule
    bar, confidence, exposure, leverage = atr.sizes.T  # each signal sized in the window, at the bar it came
    placed = ~np.isnan(leverage)
    assert placed.any() and ((0 <= confidence) & (confidence <= 1)).all() and (exposure[placed] > 0).all()
    assert (atr.turnover[bar[placed].astype(int)] > 0).all()  # its order filled at the next open
    assert (leverage[placed] >= 1).all() and (bar < len(atr.exposure)).all()


def test_bad_input_is_a_message_not_a_traceback(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(cli, ["evaluate", "--policy", str(tmp_path / "nope.pt"), "--out", str(tmp_path)])
    assert missing.exit_code == 2 and "no checkpoint" in missing.output
    too_long = runner.invoke(cli, ["evaluate", "--policy", str(MODEL), "--train-years", "30"])
    assert too_long.exit_code == 2 and "no walk-forward window" in too_long.output
    assert "Traceback" not in missing.output + too_long.output


def test_evaluate_on_your_own_bar_files(tmp_path):
    from tests.e2e.test_cli import _write_bars
    from tests.fakes import random_walk

    _write_bars(tmp_path / "AAA.csv", random_walk(1800, seed=11, symbol="AAA"))
    _write_bars(tmp_path / "BBB.csv", random_walk(1800, start=30.0, seed=12, symbol="BBB"))
    result = CliRunner().invoke(cli, ["evaluate", "--policy", "atr", "--out", str(tmp_path / "out"), "--max-windows",
                                      "1", "--bars", str(tmp_path / "AAA.csv"), "--bars", str(tmp_path / "BBB.csv")])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "out" / "report.json").read_text())["windows"][0]["scores"]
    assert {"buy_hold_AAA", "buy_hold_BBB", "atr"} <= set(scores)
    bad = CliRunner().invoke(cli, ["evaluate", "--policy", "atr", "--bars", str(tmp_path / "none.csv")])
    assert bad.exit_code == 2 and "no such file" in bad.output
