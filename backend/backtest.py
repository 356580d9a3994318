"""`sizer backtest`: several policies on the same bars, signals and costs, through the live engine, compared.

Each policy runs `run_replay` (executor, risk manager and caps, the policy, the simulated broker, the position
monitor and the learning transaction) on a scratch database; only the policy differs. The output folder gets
report.json (a summary per policy, and each policy compared signal by signal with a baseline), trades.csv (one
row per signal and policy) and the plots (PLOTS).
"""
from __future__ import annotations

import csv
import json
import math
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable

import numpy as np
import sqlalchemy as sa

from backend.bootstrap import make_sim_broker
from backend.config import Settings
from backend.data.files import bars_per_year
from backend.data.signals import ScheduledSignals, TimedSignal
from backend.domain.rewards import log_growth
from backend.evaluation import metrics, stats
from backend.replay import Summary, TrendSignals, run_replay

TRADE_COLUMNS = ("signal_id", "policy", "decided_at", "approved", "exposure", "leverage", "size_usd", "quantity", "entry_price",
                 "exit_price", "pnl_pct", "equity_before", "equity_after", "reward", "reason")
PLOTS = ("equity.png", "exposure.png", "exposure_vs_confidence.png", "qtable.png")


@dataclass(frozen=True)
class PolicySpec:
    label: str  # as named on the command line: qlearning, fixed:0.5, kelly:0.25 ...
    overrides: dict


def parse_policies(text: str) -> list[PolicySpec]:
    """`qlearning,ppo,atr,fixed:0.5,kelly,runs/mine/model.pt` (kelly alone is half Kelly; kelly:1 full; a path
    ending in .pt is a PPO checkpoint)."""
    specs = []
    for label in (part.strip() for part in text.split(",")):
        name, _, arg = label.partition(":")
        if name in ("qlearning", "ppo", "atr") and not arg:
            overrides = {"sizing_policy": name}
        elif label.endswith(".pt"):  # a PPO checkpoint, served as SIZING_POLICY=ppo serves MODEL_PATH
            overrides = {"sizing_policy": "ppo", "model_path": Path(label)}
        elif name in ("fixed", "kelly"):
            try:
                value = float(arg) if arg else (None if name == "fixed" else 0.5)
            except ValueError:
                value = None
            if value is None or not value > 0:
                raise ValueError(f"{label!r}: {name} takes a positive number, e.g. {name}:0.5")
            overrides = {"sizing_policy": name, "sizing_fixed_exposure" if name == "fixed" else
                         "sizing_kelly_fraction": value}
        else:
            raise ValueError(f"unknown policy {label!r}: qlearning, ppo, atr, fixed:EXPOSURE, kelly[:FRACTION] or a "
                             "checkpoint PATH.pt")
        if label in [s.label for s in specs]:
            raise ValueError(f"{label!r} is named twice")
        specs.append(PolicySpec(label, overrides))
    return specs


@dataclass
class PolicyRun:
    label: str
    summary: Summary
    rows: list[dict]  # one per signal handled, TRADE_COLUMNS
    confidence: dict[str, float]
    cells: list[tuple[str, str, float]]  # (state, action, q): the Q-table after the run, full states


def run_one(settings: Settings, spec: PolicySpec, signals: list[TimedSignal] | None, scratch: Path,
            end: date | None = None, on_bar: Callable[[int, int], None] | None = None,
            ) -> tuple[PolicyRun, ScheduledSignals | None]:
    url = f"sqlite:///{scratch}/{''.join(c if c.isalnum() else '_' for c in spec.label)}.db"
    s = settings.replace(**spec.overrides, database_url=url)
    broker = make_sim_broker(s)
    schedule = None
    if signals is not None:
        schedule = ScheduledSignals.schedule(signals, broker.calendar, broker.symbols, broker.index)
    summary = run_replay(s, end, broker=broker, signals=schedule or TrendSignals(broker.symbols), on_bar=on_bar)
    rows, confidence, cells = read_run(url, spec.label)
    return PolicyRun(spec.label, summary, rows, confidence, cells), schedule


def read_run(url: str, label: str) -> tuple[list[dict], dict[str, float], list[tuple[str, str, float]]]:
    """What a run left in its database: one row per signal handled (TRADE_COLUMNS), each signal's confidence,
    and the Q-table's cells (state, action, average reward) over full states."""
    engine = sa.create_engine(url)
    with engine.connect() as c:
        rows = c.execute(sa.text(
            "SELECT s.signal_id, s.confidence, s.status, s.reason, s.decision, t.decided_at, t.entry_price,"
            " t.exit_price, t.quantity, t.size_usd, t.leverage, t.equity_at_entry, t.pnl_usd, o.pnl_pct, o.reward,"
            " o.exposure FROM signal s LEFT JOIN trade t ON t.signal_id = s.signal_id"
            " LEFT JOIN outcome o ON o.trade_id = t.id ORDER BY s.received_at, s.signal_id")).all()
        cells = c.execute(sa.text("SELECT state_key, action_key, reward_sum / weight FROM q_value "
                                  "WHERE weight > 0 AND state_key NOT LIKE '%*%'")).all()
    engine.dispose()
    out, confidence = [], {}
    for (sid, conf, status, reason, decision, decided_at, entry, exit_, qty, size, lev, equity, pnl, pnl_pct, reward,
         exposure) in rows:
        decision = json.loads(decision) if isinstance(decision, str) else decision
        placed = status == "placed"
        confidence[sid] = conf
        out.append({
            "signal_id": sid, "policy": label, "decided_at": decided_at, "approved": placed,
            "exposure": exposure if exposure is not None else (decision.get("exposure", 0.0) if placed else 0.0),
            "leverage": lev if placed else None, "size_usd": size if placed else 0.0,
            "quantity": qty if placed else 0.0, "entry_price": entry, "exit_price": exit_,
            "pnl_pct": pnl_pct if placed else None, "equity_before": equity,
            "equity_after": equity + pnl if equity is not None and pnl is not None else None,
            "reward": reward, "reason": reason or decision.get("reasoning", ""),
        })
    return out, confidence, [tuple(c) for c in cells]


def scores(run: PolicyRun) -> dict:
    curve = run.summary.curve
    equity = curve.equity
    per_year = bars_per_year(curve.dates.astype("datetime64[s]")) if len(curve.dates) > 2 else metrics.YEAR
    years = (len(equity) - 1) / per_year
    placed = [r for r in run.rows if r["approved"]]
    closed = [r for r in placed if r["pnl_pct"] is not None]
    return {
        "final_equity": float(equity[-1]),
        "total_return": float(equity[-1] / equity[0] - 1),
        "log_growth_per_year": float(math.log(equity[-1] / equity[0]) / years) if years > 0 and equity[-1] > 0
        else None,
        "sharpe": float(metrics.sharpe(metrics.returns(equity), round(per_year))),
        "max_drawdown": float(metrics.max_drawdown(equity)),
        "trades": len(placed),
        "win_rate": sum(r["pnl_pct"] > 0 for r in closed) / len(closed) if closed else None,
        "mean_exposure": float(np.mean([r["exposure"] or 0.0 for r in run.rows])) if run.rows else 0.0,
        "mean_leverage": float(np.mean([r["leverage"] for r in placed])) if placed else None,
    }


def signal_growth(row: dict) -> float | None:
    """What one signal did to the account: ln(equity after / equity before) of its trade, 0 when nothing was
    placed (skipped, refused: nothing risked), None while its trade was still open at the end."""
    if not row["approved"]:
        return 0.0
    return None if row["equity_after"] is None else log_growth(row["equity_before"],
                                                               row["equity_after"] - row["equity_before"])


def paired_comparison(baseline: PolicyRun, run: PolicyRun) -> dict:
    """`run` against `baseline` signal by signal: the mean difference in log growth per signal, its t and
    bootstrap intervals and p-value, over the signals both runs saw to the end."""
    base = {r["signal_id"]: signal_growth(r) for r in baseline.rows}
    pairs = [(base[r["signal_id"]], g) for r in run.rows
             if (g := signal_growth(r)) is not None and base.get(r["signal_id"]) is not None]
    difference = stats.paired([a for a, _ in pairs], [b for _, b in pairs])
    return {"signals": len(pairs), **(difference.as_dict() if difference else {})}


def run_backtest(settings: Settings, specs: list[PolicySpec], signals: list[TimedSignal] | None, out: Path,
                 end: date | None = None, on_policy: Callable[[str], Callable[[int, int], None]] | None = None,
                 baseline: str | None = None) -> dict:
    """Every policy on the same bars and signals (None: the built-in trend follower) from SIM_START to `end`;
    writes the report. Each policy is compared with `baseline` (default: the first). ValueError: bars or
    SIM_START the simulator cannot use, or a baseline that is not one of the policies."""
    baseline = baseline or specs[0].label
    if baseline not in [s.label for s in specs]:
        raise ValueError(f"--baseline {baseline!r} is not one of the policies ({', '.join(s.label for s in specs)})")
    symbols = make_sim_broker(settings).symbols  # bad files stop here, before any run
    out.mkdir(parents=True, exist_ok=True)
    runs, schedule = [], None
    with tempfile.TemporaryDirectory() as scratch:
        for spec in specs:
            run, schedule = run_one(settings, spec, signals, Path(scratch), end,
                                    on_policy(spec.label) if on_policy else None)
            runs.append(run)
    base = next(r for r in runs if r.label == baseline)
    report = {
        "policies": {r.label: scores(r) for r in runs},
        "paired": {"baseline": baseline, "metric": "log growth per signal (ln equity after / before its trade; "
                                                    "0 when nothing was placed), policy - baseline",
                   "policies": {r.label: paired_comparison(base, r) for r in runs if r is not base}},
        "signals": ({"read": len(signals), "used": schedule.used,
                     "skipped": {reason: len(ids) for reason, ids in schedule.unused.items()},
                     "skipped_ids": schedule.unused} if signals is not None else
                    {"source": "trend", "used": runs[0].summary.signals}),
        "bars": {"symbols": list(symbols), "first": str(runs[0].summary.curve.dates[0]),
                 "last": str(runs[0].summary.curve.dates[-1])},
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    with open(out / "trades.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, TRADE_COLUMNS)
        writer.writeheader()
        for run in runs:
            writer.writerows(run.rows)
    _plots(out, runs)
    return report


def _plots(out: Path, runs: list[PolicyRun]) -> None:
    from backend.evaluation.report import _save, plt

    fig, ax = plt.subplots(figsize=(11, 5))
    for run in runs:
        ax.plot(run.summary.curve.dates, run.summary.curve.equity, label=run.label)
    ax.set(ylabel="equity", yscale="log", title="equity of every policy on the same signals")
    ax.legend(fontsize=8)
    _save(fig, out / "equity.png")

    fig, (held, lev) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for run in runs:
        held.plot(run.summary.curve.dates[1:], run.summary.curve.exposure, lw=0.9, label=run.label)
        placed = [r for r in run.rows if r["approved"] and r["decided_at"] is not None]
        lev.scatter([np.datetime64(str(r["decided_at"])[:10]) for r in placed], [r["leverage"] for r in placed],
                    s=8, alpha=0.6, label=run.label)
    held.set(ylabel="exposure held (x equity)", title="what sizing chose over time: gross exposure at each bar")
    lev.set(ylabel="leverage of each trade placed", xlabel="date")
    held.legend(fontsize=8)
    _save(fig, out / "exposure.png")

    fig, (exp, lev) = plt.subplots(1, 2, figsize=(12, 5))
    for run in runs:
        exp.scatter([run.confidence[r["signal_id"]] for r in run.rows], [r["exposure"] or 0.0 for r in run.rows],
                    s=8, alpha=0.5, label=run.label)
        placed = [r for r in run.rows if r["approved"]]
        lev.scatter([run.confidence[r["signal_id"]] for r in placed], [r["leverage"] for r in placed], s=8,
                    alpha=0.5, label=run.label)
    exp.set(xlabel="signal confidence", ylabel="exposure chosen (notional / equity)",
            title="exposure against confidence (0: skipped)")
    lev.set(xlabel="signal confidence", ylabel="leverage", title="leverage of the trades placed")
    exp.legend(fontsize=8)
    _save(fig, out / "exposure_vs_confidence.png")

    fig, ax = plt.subplots(figsize=(11, 7))
    q = next((r for r in sorted(runs, key=lambda r: r.label != "qlearning") if r.cells), None)
    if q is None:
        ax.text(0.5, 0.5, "no Q-table cells", ha="center", transform=ax.transAxes)
    else:
        states = sorted({s for s, _, _ in q.cells})
        actions = sorted({a for _, a, _ in q.cells}, key=float)
        grid = np.full((len(states), len(actions)), np.nan)
        for s, a, v in q.cells:
            grid[states.index(s), actions.index(a)] = v
        image = ax.imshow(grid, aspect="auto", cmap="RdYlGn", vmin=-np.nanmax(np.abs(grid)),
                          vmax=np.nanmax(np.abs(grid)))
        ax.set_xticks(range(len(actions)), actions, rotation=90, fontsize=7)
        ax.set_yticks(range(len(states)), states, fontsize=6)
        ax.set(xlabel="exposure", title=f"{q.label}: average reward per state and exposure after the run")
        fig.colorbar(image, ax=ax)
    _save(fig, out / "qtable.png")
