"""One training run as `sizer train` performs it: data windows, spec, PPO, checkpoint, held-out validation, for the
trading environment (backend.rl.env) or the signal sizing environment (backend.rl.signal_env)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import date
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from pydantic import TypeAdapter, ValidationError

from backend.config import Settings
from backend.data.files import load_market
from backend.data.signals import load_signals
from backend.data.synthetic import market, named_case
from backend.domain.state import CONFIDENCE_BUCKETS, BucketEdges, confidence_bucket
from backend.rl import checkpoint
from backend.rl.env import EnvConfig, MarketTensors, SizingEnv
from backend.rl.evaluate import Validation, validate
from backend.rl.observation import fit_spec, market_features
from backend.rl.ppo import PPOConfig, train
from backend.rl.signal_env import Caps, SignalSizingEnv, sizing_spec, trade_paths
from backend.replay import trend_signals


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
    """A config section as the dataclass `cls`, validated by pydantic (each value coerced to its field's type: lists
    to tuples, ISO strings to dates); an unknown or ill-typed setting is a ValueError that names it."""
    known = [f.name for f in fields(cls)]
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"{name}: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    try:
        return TypeAdapter(cls).validate_python(values)
    except ValidationError as exc:
        raise ValueError(f"{name}: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                  for e in exc.errors())) from None


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
    loaded = checkpoint.load(path, device, kind="trading")
    validation = validate(checkpoint.greedy(loaded), test_market, loaded.spec, loaded.env)
    (out_dir / "evaluation.json").write_text(json.dumps(
        {"data_window": window, "validation": validation.to_dict(), "last_update": history[-1]}, indent=1))
    return path, validation


# --- the signal sizing environment (kind "sizing") ------------------------------------------------------------
@dataclass(frozen=True)
class SignalData:
    symbols: tuple[str, ...] = ("SP500", "NASDAQ")
    """Bundled series, when `bars` is empty."""
    bars: tuple[str, ...] = ()
    """Bar files (CSV or Parquet, SYMBOL=PATH or PATH), on the timestamps they share."""
    signals: str = "trend"
    """A signal CSV, `trend` (the built-in trend follower on the bars), or one of bench/sizing's generated markets
    (coin:F:T, coin:fair, coin:losing, confidence, drift:MU:SIGMA), which brings its own bars."""
    trades: int = 1000
    """Generated markets: signals per market."""
    train_seed: int = 0
    """Generated markets: the market trained on."""
    test_seed: int = 1
    """Generated markets: the held-out market, drawn afresh."""
    train_end: date | None = None
    """Bars and signals: the last training bar (signals after it are held out); normalisation from bars to here."""
    test_end: date | None = None
    """Bars and signals: the last held-out bar (default: the data's end)."""
    window: int = 0
    """Bars in the observation's market window. 0: none, the signal and the account only: on a few thousand
    signals, a window lets the policy tell the training trades apart and learn which of them won."""
    episode_signals: int = 256
    """Signals per training episode."""


SIZING_PPO: dict[str, Any] = dict(
    gamma=0.0,  # a signal's size changes its own trade's growth only: each decision is its own episode step
    n_envs=1024, n_steps=4,  # one-step decisions: short rollouts, many updates
    n_minibatches=2, update_epochs=1,  # exact full-information gradients: one pass over each rollout suffices
    hidden=64, activation="relu", ordinal=True, learning_rate=3e-3)
"""The signal sizing environment's PPO settings, under those of a config's ppo section (bench/ppo_sizing's too)."""


def load_sizing_config(path: Path | None, overrides: dict[str, Any], data_overrides: dict[str, Any]
                       ) -> tuple[PPOConfig, SignalData, dict[str, Any]]:
    """YAML with `kind: sizing` and sections `ppo`, `data` (SignalData) and `caps` (settings such as
    rm_max_leverage: the caps trained under; default: this process's settings)."""
    doc = (yaml.safe_load(path.read_text()) if path else {}) or {}
    if not isinstance(doc, dict) or set(doc) - {"kind", "ppo", "data", "caps"}:
        raise ValueError("the config must be a mapping with kind: sizing and sections ppo, data and caps")
    ppo = _section(PPOConfig, {**SIZING_PPO, **(doc.get("ppo") or {}), **overrides}, "ppo")
    data = _section(SignalData, {**(doc.get("data") or {}), **data_overrides}, "data")
    return ppo, data, dict(doc.get("caps") or {})


def is_sizing_config(path: Path | None) -> bool:
    doc = yaml.safe_load(path.read_text()) if path else None
    return isinstance(doc, dict) and doc.get("kind") == "sizing"


def sizing_data(data: SignalData, settings: Settings):
    """(train series, train signals, test series, test signals, the data window) for SignalData."""
    if data.signals.split(":")[0] in ("coin", "confidence", "drift"):
        case = named_case(data.signals, data.trades)
        train_m, test_m = market(case, data.train_seed), market(case, data.test_seed)
        window = {"generated": data.signals, "case": case.name, "trades": case.trades, "train_seed": data.train_seed,
                  "test_seed": data.test_seed}
        return [train_m.series], train_m.timed, [test_m.series], test_m.timed, window, len(train_m.series)
    series = load_market(data.bars, data.symbols)
    signals = trend_signals(series, settings) if data.signals == "trend" else load_signals(Path(data.signals))
    ts = next(iter(series.values())).ts
    train_end = np.datetime64(data.train_end or ts[len(ts) * 2 // 3].astype("datetime64[D]"), "s") \
        + np.timedelta64(86399, "s")
    test_end = np.datetime64(data.test_end, "s") + np.timedelta64(86399, "s") if data.test_end else ts[-1]
    train = [s for s in signals if s.at <= train_end]
    test = [s for s in signals if train_end < s.at <= test_end]
    window = {"symbols": list(series), "signals": data.signals, "train_start": str(ts[0].astype("datetime64[D]")),
              "train_end": str(train_end.astype("datetime64[D]")), "test_end": str(test_end.astype("datetime64[D]"))}
    rows = int(np.searchsorted(ts, train_end, side="right"))
    return list(series.values()), train, list(series.values()), test, window, rows


def held_out(choose: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], env_args: tuple, menu: tuple[float, ...],
             seed: int = 0) -> dict:
    """One pass over the held-out signals, in order, by the policy (`choose(obs, mask) -> action`), beside every
    fixed menu exposure (cut to the caps as the risk manager would) and random sizing: log growth, mean exposure,
    and the policy's exposure per confidence bucket."""
    trades = env_args[0]
    n_fixed = len(menu)
    env = SignalSizingEnv(*env_args, n_envs=n_fixed + 2, episode_signals=len(trades), seed=seed)
    obs, mask = env.reset(starts=torch.zeros(env.n, dtype=torch.long, device=env.device))
    gen = torch.Generator(device=env.device).manual_seed(seed)
    ladder = torch.arange(len(menu), device=env.device)
    growth = torch.zeros(env.n, device=env.device)
    exposure = torch.zeros(len(trades), env.n, device=env.device, dtype=torch.float64)
    for k in range(len(trades)):
        fixed = torch.where(mask[1:n_fixed + 1], ladder, 0)  # the largest allowed exposure up to each menu point
        fixed = torch.cummax(fixed, dim=1).values.diagonal()
        action = torch.cat([choose(obs[:1], mask[:1]).reshape(1), fixed,
                            torch.multinomial(mask[-1:].float(), 1, generator=gen).reshape(1)])
        obs, mask, reward, _, _, info = env.step(action)
        growth += reward
        exposure[k] = info["exposure"]
    g = growth.tolist()
    best = int(np.argmax(g[1:n_fixed + 1]))
    buckets = np.array([confidence_bucket(c, BucketEdges()) for c in trades.confidence])
    mine = exposure[:, 0].cpu().numpy()
    return {
        "signals": len(trades),
        "policy": {"log_growth": g[0], "mean_exposure": float(mine.mean()), "exposures": mine.tolist(),
                   "exposure_by_confidence": {b: float(mine[buckets == b].mean()) for b in CONFIDENCE_BUCKETS
                                              if (buckets == b).any()}},
        "best_fixed_in_hindsight": {"exposure": menu[best], "log_growth": g[1 + best]},
        "fixed": {f"{e:g}": g[1 + i] for i, e in enumerate(menu)},
        "random": {"log_growth": g[-1], "mean_exposure": float(exposure[:, -1].mean())},
        "skip": {"log_growth": 0.0},
    }


def run_sizing(config: PPOConfig, data: SignalData, caps: dict[str, Any], out_dir: Path, settings: Settings,
               on_update: Callable[[int, int, dict], None] | None = None) -> tuple[Path, dict]:
    """Train a PPO sizing policy on the training signals, save its checkpoint (kind "sizing": menu, caps,
    observation spec, data window) and report it on the held-out signals (evaluation.json)."""
    torch.manual_seed(config.seed)
    device = config.resolved_device()
    settings = settings.replace(**caps)
    risk, sim, win_rate_window = settings.risk, settings.sim, settings.state.win_rate_window
    menu = risk.exposure_menu()
    train_series, train_signals, test_series, test_signals, window, rows = sizing_data(data, settings)
    spec = sizing_spec(fit_spec(np.concatenate([market_features(s.open, s.high, s.low, s.close, s.volume)[:rows]
                                                for s in train_series]), data.window))
    train_trades = trade_paths(train_series, train_signals, risk, sim, win_rate_window, menu)
    test_trades = trade_paths(test_series, test_signals, risk, sim, win_rate_window, menu)
    env = SignalSizingEnv(train_trades.pessimistic(settings.sizing.confidence_z), train_series, spec, risk, sim, menu,
                          config.n_envs, data.episode_signals, config.seed, device)
    agent, history = train(config, env, out_dir, on_update)
    path = out_dir / "model.pt"
    window |= {"train_signals": len(train_trades), "test_signals": len(test_trades)}
    trained_caps = asdict(Caps.of(risk, sim))
    checkpoint.save(path, agent, spec, config, data_window=window, metrics=history[-1], n_actions=len(menu),
                    kind="sizing", sizing={"menu": list(menu), "caps": trained_caps})
    loaded = checkpoint.load(path, device, kind="sizing")
    greedy = lambda obs, mask: loaded.probabilities(obs, mask).argmax(dim=-1)  # noqa: E731
    report = {"data_window": window, "menu": list(menu), "caps": trained_caps,
              "held_out": held_out(greedy, (test_trades, test_series, spec, risk, sim, menu), menu),
              "last_update": history[-1]}
    (out_dir / "evaluation.json").write_text(json.dumps(report, indent=1))
    return path, report
