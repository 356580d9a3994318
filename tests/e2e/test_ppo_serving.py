"""The shipped PPO checkpoint served through the API, and `sizer train` as a user runs it."""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from backend.api.app import create_api
from backend.domain.state import validate_state_key
from backend.rl.env import ACTION_NAMES
from tests.conftest import make_settings
from tests.e2e.test_cli import sizer


TRADER = Path(__file__).resolve().parents[2] / "models" / "ppo-trader" / "model.pt"


@pytest.fixture
async def api(sqlite_url, request):
    """The API serving SIZING_POLICY=ppo: the shipped sizing checkpoint, or with a `model` marker another."""
    model = request.node.get_closest_marker("model")
    app = create_api(make_settings(database_url=sqlite_url, sizing_policy="ppo", rm_max_position_usd=2_000,
                                   **({"model_path": model.args[0]} if model else {})), run_clock=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sizer") as client:
            yield client


async def test_the_shipped_sizing_checkpoint_sizes_each_signal_from_its_menu_within_the_caps(api):
    serving = (await api.get("/v1/agent")).json()["serving"]
    assert serving["kind"] == "sizing" and serving["menu"][0] == 0 and serving["trained_caps"]["rm_max_exposure"] > 0
    menu = {f"{e:g}" for e in serving["menu"]}
    for symbol in ("SP500", "NASDAQ"):
        for side in ("buy", "sell"):
            r = await api.post("/v1/decisions", json={"symbol": symbol, "side": side, "confidence": 0.7})
            assert r.status_code == 200, r.text
            d = r.json()
            assert d["policy"] == "ppo" and d["model_version"] == serving["model_version"]
            assert d["action_key"] in menu and validate_state_key(d["state_key"])
            assert d["size_usd"] <= 2_000 + 1e-9 and d["leverage"] == max(1.0, d["exposure"])
            assert d["skipped"] == (d["action_key"] == "0") or "capped by" in d["reasoning"]
    counts = (await api.get("/v1/agent")).json()["serving"]["action_counts"]
    assert set(counts) == menu and sum(counts.values()) == 4


@pytest.mark.model(TRADER)
async def test_the_trading_checkpoint_sizes_decisions_within_the_caps(api):
    seen = set()
    for symbol in ("SP500", "NASDAQ"):
        for confidence in (0.2, 0.9):
            r = await api.post("/v1/decisions", json={"symbol": symbol, "side": "buy", "confidence": confidence})
            assert r.status_code == 200, r.text
            d = r.json()
            assert d["policy"] == "ppo" and d["model_version"].startswith("ppo-")
            assert d["action_key"] in ACTION_NAMES
            assert validate_state_key(d["state_key"])  # the Q agent learns from trades the PPO sizes too
            assert d["size_usd"] <= 2_000 + 1e-9 and d["leverage"] == 1.0
            assert d["approved"] == (d["action_key"] != "HOLD") and d["skipped"] == (d["action_key"] == "HOLD")
            seen.add(d["action_key"])
    # the model was trained long-only: a sell signal with no position is declined, and the decision says why
    r = await api.post("/v1/decisions", json={"symbol": "SP500", "side": "sell", "confidence": 0.9})
    assert r.json()["approved"] is False and r.json()["exposure"] == 0
    assert "long-only" in r.json()["reasoning"] and "minimum" not in r.json()["reasoning"]
    serving = (await api.get("/v1/agent")).json()["serving"]
    assert serving["policy"] == "ppo" and serving["long_only"] is True and serving["model_version"].startswith("ppo-")
    assert set(serving["action_counts"]) == set(ACTION_NAMES) and sum(serving["action_counts"].values()) == 4  # the sell never reached the model
    assert 0 <= serving["action_dominance"] <= 1 and isinstance(serving["collapse_alerts"], list)
    metrics = (await api.get("/metrics")).text
    assert "sizer_policy_action_dominance" in metrics and "sizer_policy_action_entropy" in metrics


def test_train_command_writes_checkpoint_logs_and_report(tmp_path, sqlite_url):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "ppo: {total_timesteps: 2048, n_envs: 16, n_steps: 16, hidden: 16, n_minibatches: 2, update_epochs: 1}\n"
        "env: {episode_bars: 64}\n"
        "data: {symbols: [SP500], train_end: 2004-12-31, test_start: 2005-01-03, test_end: 2006-12-29, window: 8}\n"
    )
    out = tmp_path / "run"
    r = sizer("train", "--config", str(config), "--out", str(out), "--seed", "5", env={"DATABASE_URL": sqlite_url})
    assert r.returncode in (0, 2), r.stderr  # 2: trained, but the tiny model may fail held-out validation
    assert "Traceback" not in r.stderr
    assert (out / "model.pt").exists() and (out / "train_log.csv").exists()
    report = json.loads((out / "evaluation.json").read_text())
    assert report["validation"]["invalid_share"] == 0
    assert report["data_window"]["test_start"] == "2005-01-03"
    assert r.returncode == (0 if report["validation"]["passed"] else 2)


@pytest.mark.parametrize("content, message", [
    ("ppo: {learning_rat: 0.1}\n", "unknown setting"),
    ("data: {train_end: 2010-01-01, test_start: 2009-01-01}\n", "held-out"),
    ("[1, 2]\n", "mapping"),
    ("data: {bars: [/nowhere/AAPL.csv]}\n", "data.bars: /nowhere/AAPL.csv: no such file"),
])
def test_train_command_refuses_bad_configs(tmp_path, content, message, sqlite_url):
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    r = sizer("train", "--config", str(config), "--out", str(tmp_path / "x"), env={"DATABASE_URL": sqlite_url})
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_serving_a_missing_checkpoint_stops_start_up(tmp_path, sqlite_url):
    r = sizer("serve", env={"DATABASE_URL": sqlite_url, "SIZING_POLICY": "ppo",
                            "MODEL_PATH": str(tmp_path / "nope.pt")})
    assert r.returncode == 2 and "MODEL_PATH" in r.stderr and "no checkpoint" in r.stderr
