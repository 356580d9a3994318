"""One training run as `sizer train` performs it: data windows, spec, PPO, checkpoint, held-out validation."""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import date
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

from backend.data.files import load_market
from backend.rl import checkpoint
from backend.rl.env import EnvConfig, MarketTensors, SizingEnv
from backend.rl.evaluate import Validation, validate
from backend.rl.observation import fit_spec, market_features
from backend.rl.ppo import PPOConfig, train


@dataclass(frozen=True)
class DataConfig:
    symbols: tuple[str, ...] = ("SP500", "NASDAQ")
    """Bundled series to train on (one calendar), when `bars` is empty."""
    bars: tuple[str, ...] = ()
    """Bar files to train on instead (CSV or Parquet, SYMBOL=PATH or PATH), on the timestamps they share."""
    train_end: date = date(2012, 12, 31)
    """Last training bar; normalisation statistics come from bars up to here only."""
    test_start: date = date(2013, 1, 2)
    """First held-out bar."""
    test_end: date = date(2018, 12, 31)
    """Last held-out bar."""
    window: int = 32
    """Bars in the observation window."""


def _section(cls, values: dict[str, Any], name: str):
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"{name}: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    out = {}
    for key, value in values.items():
        default = getattr(cls(), key) if key != "env" else None
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        if isinstance(default, date) and isinstance(value, str):
            value = date.fromisoformat(value)
        out[key] = value
    return cls(**out)


def load_config(path: Path | None, overrides: dict[str, Any]) -> tuple[PPOConfig, DataConfig]:
    """YAML with sections `ppo`, `env` and `data` (all optional); flags in `overrides` win."""
    doc = yaml.safe_load(path.read_text()) if path else {}
    doc = doc or {}
    if not isinstance(doc, dict) or set(doc) - {"ppo", "env", "data"}:
        raise ValueError("the config must be a mapping with sections ppo, env and data")
    env = _section(EnvConfig, doc.get("env") or {}, "env")
    ppo = _section(PPOConfig, {**(doc.get("ppo") or {}), **overrides}, "ppo")
    ppo.env = env
    data = _section(DataConfig, doc.get("data") or {}, "data")
    if not data.train_end < data.test_start <= data.test_end:
        raise ValueError("data: train_end < test_start <= test_end must hold (held-out bars come after training)")
    return ppo, data


def run(config: PPOConfig, data: DataConfig, out_dir: Path,
        on_update: Callable[[int, int, dict], None] | None = None) -> tuple[Path, Validation]:
    torch.manual_seed(config.seed)
    device = config.resolved_device()
    series = list(load_market(data.bars, data.symbols).values())
    train_end = np.datetime64(data.train_end, "s")
    rows = int(np.searchsorted(series[0].ts, train_end, side="right"))
    spec = fit_spec(np.concatenate([market_features(s.open, s.high, s.low, s.close, s.volume)[:rows]
                                    for s in series]), data.window)
    train_market = MarketTensors.build(series, spec, device, end=train_end)
    test_market = MarketTensors.build(series, spec, device, start=np.datetime64(data.test_start, "s"),
                                      end=np.datetime64(data.test_end, "s"))
    env = SizingEnv(train_market, spec, config.env, config.n_envs, seed=config.seed)
    agent, history = train(config, env, out_dir, on_update)
    path = out_dir / "model.pt"
    window = {"symbols": [s.symbol for s in series], "train_start": str(series[0].ts[0].astype("datetime64[D]")),
              "train_end": str(data.train_end), "test_start": str(data.test_start), "test_end": str(data.test_end)}
    checkpoint.save(path, agent, spec, config, data_window=window, metrics=history[-1])
    loaded = checkpoint.load(path, device)
    validation = validate(checkpoint.greedy(loaded), test_market, loaded.spec, loaded.env)
    (out_dir / "evaluation.json").write_text(json.dumps(
        {"data_window": window, "validation": validation.to_dict(), "last_update": history[-1]}, indent=1))
    return path, validation
