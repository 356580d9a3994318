"""The `sizer` command as a user runs it: a subprocess with its own environment."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest


def sizer(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RL_", "RM_", "SIM_", "DATABASE_URL"))}
    return subprocess.run([sys.executable, "-m", "backend.cli", *args], env={**clean, "COLUMNS": "200", **env},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(sqlite_url):
    return {"DATABASE_URL": sqlite_url}


def test_replay_runs_the_loop_and_compares_with_the_atr_rule(env):
    r = sizer("replay", "--start", "2011-01-03", "--end", "2011-12-30", "--keep", env=env)
    assert r.returncode == 0, r.stderr
    lines = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.count("│") > 5}
    assert {"qlearning", "atr"} <= set(lines)
    signals, placed = (int(c.strip()) for c in lines["qlearning"].split("│")[2:4])
    atr_placed = int(lines["atr"].split("│")[3])
    assert signals > 10 and atr_placed > 10 and placed <= atr_placed
    # --keep learned into DATABASE_URL: every signal taught the agent, placed or followed at size 0
    doc = json.loads(sizer("qtable", "export", "-", env=env).stdout)
    assert doc["format"] == "sizer.qtable.v2" and doc["metadata"]["total_updates"] == len(doc["outcomes"]) > 10
    assert sum(o["exposure"] > 0 for o in doc["outcomes"]) == placed
    assert doc["q_table"] and all(k.count("|") == 4 for k in doc["q_table"])


def test_qtable_export_import_round_trip_and_bad_files(env, tmp_path, sqlite_url):
    legacy = tmp_path / "state.json"  # the predecessors' format: size_mult|leverage actions, plain values
    legacy.write_text(json.dumps({
        "q_table": {"low_vol_trending|high|light|good|1.0|3.0": 0.509,  # 0.25 x 3 = 0.75 -> 0.8
                    "low_vol_trending|high|light|good|1.5|2.0": 0.3,  # 0.75 -> 0.8 as well: added up
                    "high_vol_ranging|low|heavy|bad|0.3|1.0": -0.456,  # 0.075 -> 0.08
                    "neutral|low|heavy|bad|1.0|1.0": 0.0},  # no evidence: left out
        "outcomes": [{"state_key": "low_vol_trending|high|light|good", "action_key": "1.0|3.0", "reward": 2.068}],
        "metadata": {"learning_rate": 0.15, "exploration_rate": 0.1, "total_updates": 42},
    }))
    r = sizer("qtable", "import", str(legacy), env=env)
    assert r.returncode == 0 and "imported 2 cells" in r.stdout, r.stderr
    out = tmp_path / "out.json"
    assert sizer("qtable", "export", str(out), env=env).returncode == 0
    doc = json.loads(out.read_text())
    assert set(doc) == {"format", "reward_fn", "menu", "q_table", "outcomes", "metadata"}
    assert doc["menu"][:3] == [0.0, 0.05, 0.063] and doc["menu"][-1] == 3.0
    assert doc["q_table"] == {
        "low_vol_trending|high|light|good|0.8": {"q": pytest.approx(0.4045), "weight": 2.0, "visits": 2,
                                                 "reward_sum": pytest.approx(0.809),
                                                 "reward_sq_sum": pytest.approx(0.509**2 + 0.09)},
        "high_vol_ranging|low|heavy|bad|0.08": {"q": -0.456, "weight": 1.0, "visits": 1, "reward_sum": -0.456,
                                                "reward_sq_sum": pytest.approx(0.456**2)},
    }
    # a sizer.qtable.v2 file round-trips exactly
    r = sizer("qtable", "import", str(out), "--replace", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(sizer("qtable", "export", "-", env=env).stdout)["q_table"] == doc["q_table"]

    bad = tmp_path / "bad.json"
    cell = {"weight": 1.0, "visits": 1, "reward_sum": 1.0, "reward_sq_sum": 1.0}
    for content, message in [
        ("{not json", "cannot read"),
        (json.dumps({"q_table": {"calm|high|light|good|1.0|3.0": 1.0}}), "unknown state key"),
        (json.dumps({"q_table": {"low_vol_trending|high|light|good|9.0|3.0": 1.0}}), "unknown legacy action key"),
        (json.dumps({"q_table": {"low_vol_trending|high|light|good|1.0|3.0": "NaN"}}), "not a finite number"),
        (json.dumps({"format": "sizer.qtable.v2", "q_table": {"*|high|*|*|-2": cell}}), "unknown action key"),
        (json.dumps({"format": "sizer.qtable.v2", "q_table": {"*|high|*|*|1": {**cell, "weight": -1}}}),
         "non-negative"),
        (json.dumps({"format": "sizer.qtable.v9", "q_table": {}}), "unknown format"),
        (json.dumps([1, 2]), "expected an object"),
    ]:
        bad.write_text(content)
        r = sizer("qtable", "import", str(bad), "--replace", env=env)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (message, r.stderr)
    # nothing already stored was lost by the refused imports
    assert json.loads(sizer("qtable", "export", "-", env=env).stdout)["q_table"] == doc["q_table"]


def test_a_bad_setting_stops_start_up_naming_it(env):
    r = sizer("serve", env={**env, "RL_SIZING_CONFIDENCE_Z": "-1", "RM_MAX_LEVERAGE": "lots"})
    assert r.returncode == 2
    assert "RL_SIZING_CONFIDENCE_Z" in r.stderr and "RM_MAX_LEVERAGE" in r.stderr and "Traceback" not in r.stderr


def test_live_trading_is_refused_without_the_second_setting(env):
    live = {**env, "BROKER": "alpaca", "ALPACA_API_KEY_ID": "PKLIVE", "ALPACA_API_SECRET_KEY": "do-not-print-me",
            "ALPACA_PAPER": "false"}
    r = sizer("serve", env=live)
    assert r.returncode == 2 and "ALPACA_LIVE_TRADING_CONFIRMED=true" in r.stderr and "Traceback" not in r.stderr
    assert "do-not-print-me" not in r.stderr + r.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_on_embedded_defaults_trades_and_learns(tmp_path):
    """`sizer serve` with no configuration but a port and a fast clock: SQLite under ./data of its cwd."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RL_", "RM_", "SIM_", "DATABASE_URL"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "serve", "--port", str(port)],
        cwd=tmp_path, env={**env, "SIM_BAR_SECONDS": "0.2", "RM_DEFAULT_TIME_LIMIT_HOURS": "48",
                           "PYTHONPATH": os.getcwd()},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        r = httpx.post(f"{base}/v1/signals", json={"signal_id": "e2e", "symbol": "SP500", "side": "buy",
                                                   "confidence": 0.7})
        # a fresh agent has no evidence of an edge yet: it skips, and follows the signal without an order
        assert r.status_code == 200 and r.json()["status"] == "skipped", r.text
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/v1/outcomes").json()["total"] == 0:
            assert time.monotonic() < deadline, "the trade never closed"
            time.sleep(0.2)
        assert httpx.get(f"{base}/v1/agent").json()["total_updates"] == 1
        assert (tmp_path / "data" / "sizer.db").exists()
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert "Traceback" not in output, output


def _write_bars(path, series) -> None:
    import pandas as pd

    pd.DataFrame({"date": series.ts.astype("datetime64[D]").astype(str), "open": series.open, "high": series.high,
                  "low": series.low, "close": series.close}).to_csv(path, index=False)


def test_replay_on_your_own_bar_files(env, tmp_path):
    from tests.fakes import random_walk

    _write_bars(tmp_path / "abc.csv", random_walk(400, seed=1, symbol="ABC"))
    _write_bars(tmp_path / "other.csv", random_walk(400, start=50, seed=2, symbol="XYZ"))
    r = sizer("replay", "--bars", str(tmp_path / "abc.csv"), "--bars", f"XYZ={tmp_path / 'other.csv'}", env=env)
    assert r.returncode == 0, r.stderr
    lines = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.count("│") > 5}
    assert int(lines["atr"].split("│")[2]) > 5  # the trend follower found signals on both files' bars

    broken = (tmp_path / "abc.csv").read_text().splitlines()
    broken[5] = broken[5].replace(",", ",-", 1)  # a negative open on the file's fifth bar
    (tmp_path / "bad.csv").write_text("\n".join(broken))
    r = sizer("replay", "--bars", f"ABC={tmp_path / 'bad.csv'}", env=env)
    assert r.returncode == 2 and "bad.csv: row 5, column 'open'" in r.stderr and "Traceback" not in r.stderr
    r = sizer("serve", env={**env, "SIM_BARS": json.dumps([str(tmp_path / "bad.csv")])})
    assert r.returncode == 2 and "row 5, column 'open'" in r.stderr and "Traceback" not in r.stderr


def test_a_dotenv_written_for_alpaca_does_not_break_the_commands_that_replay_history(tmp_path):
    """Replay and backtest always run on the simulator (and its scratch databases), whatever BROKER says."""
    (tmp_path / ".env").write_text("BROKER=alpaca\nALPACA_API_KEY=PKTEST\nALPACA_SECRET_KEY=secret\n"
                                   f"DATABASE_URL=sqlite:///{tmp_path}/served.db\n")
    (tmp_path / "signals.csv").write_text("timestamp,symbol,side,confidence\n2018-06-04,SP500,buy,0.7\n")
    env = {k: v for k, v in os.environ.items() if k != "SIZER_ENV_FILE" and not k.startswith(("BROKER", "ALPACA"))}
    for args in (["replay", "--start", "2018-05-01", "--end", "2018-07-02", "--no-compare"],
                 ["backtest", "--signals", "signals.csv", "--policy", "atr", "--start", "2018-05-01", "--out", "out"]):
        r = subprocess.run([sys.executable, "-m", "backend.cli", *args], cwd=tmp_path, env={**env, "COLUMNS": "200"},
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
    assert (tmp_path / "out" / "report.json").exists() and not (tmp_path / "served.db").exists()
