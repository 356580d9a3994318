"""bench/sizing: does the sizer size? Markets with a known answer, every policy through the live engine.

Run on demand (not part of the test suite), from the project root:

    .venv/bin/python bench/sizing.py [--seeds 5] [--jobs 2] [--cases coin,confidence,drift,caps] [--trades 1000]

Each case is a generated market with a known answer (backend/data/synthetic.py: daily bars of one symbol, SYN,
and a schedule of BUY signals on it). Every policy sees the same bars and signals, through `run_replay`: executor,
risk manager (caps), the policy, the simulated broker (fills at the next open, 2 bps slippage, 1 bp commission a
side), the position monitor and the learning transaction, on a scratch SQLite database. Only the policy differs.
The wide caps allow every menu exposure up to 8x (a 10x account with a 10% maintenance margin, 50% risk at the
stop). The protections (daily loss, drawdown, losing streak) are off: they would stop the runs being compared.

Cases (the issue's proof):
- coin: f* in {0.5, 1.5, 3, 4.5} at two edge clarities, the edge's t-statistic over 500 trades t500 = 4 and 6
  (bar noise 0.2% a bar); a fair coin and a losing one (p = 0.45), a = 5%.
- confidence: right with probability 0.4 + 0.3 c, a = 8%, 2,000 signals (five buckets share them);
  confidence_long: the same with 5,000 (not run by default).
- drift: mu/sigma 8%/16%, 20%/20% and 0%/16%: the edge per trade is small next to its noise.
- caps: the coin cases at t500 = 6 under the DEFAULT caps (3x, 8% risk at the stop, a 4x account with a 25%
  maintenance margin) instead of the wide ones.

Policies: qlearning (log_growth reward), qlearning_shaped_pnl (the predecessors' reward), atr (0.5% risk at the stop),
random (uniform over the menu exposures the caps allow), fixed (1x equity), kelly and half_kelly (estimated
online from all past trades), oracle (the best fixed exposure for the true distribution; per confidence bucket in
the confidence case).

Per case and policy, over the last half of the trades (median and range over seeds):
- growth: the expected log growth of the exposures taken / the oracle's (the true growth function of the case,
  so luck in the realised returns does not enter), and the realised log growth / the oracle's realised one;
- exposure: the mean exposure taken / the oracle exposure (per bucket in the confidence case);
- to80: the first trade from which 100 trades in a row average 80% of the oracle's expected growth;
- max drawdown of the account.
Results: a table on stdout and bench/results/sizing-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.brokers.sim import SimBroker  # noqa: E402
from backend.config import Settings  # noqa: E402
from backend.data.synthetic import (  # noqa: E402
    GRID, PROTECTIONS_OFF, SYMBOL, WARMUP, WIDE_CAPS, Case, Truth, bucket, coin_case, market, truth,
)
from backend.domain.model import Proposal  # noqa: E402
from backend.domain.state import CONFIDENCE_BUCKETS  # noqa: E402
from backend.replay import run_replay  # noqa: E402

SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None  # scratch databases in memory: no disk flushes


def cases(trades: int, kinds: set[str]) -> list[Case]:
    out: list[Case] = []
    if "coin" in kinds:
        out += [coin_case(f, t, trades) for t in (4, 6) for f in (0.5, 1.5, 3.0, 4.5)]
        out += [Case("coin fair", "coin", trades, p=0.5, a=0.05), Case("coin losing", "coin", trades, p=0.45, a=0.05)]
    if "confidence" in kinds:
        out.append(Case("confidence p=0.4+0.3c", "confidence", 2 * trades, a=0.08))
    if "confidence_long" in kinds:  # five buckets share the signals: how the agent fares with more of them
        out.append(Case("confidence p=0.4+0.3c, 5x signals", "confidence", 5 * trades, a=0.08))
    if "drift" in kinds:
        out += [Case(f"drift mu={m:.0%} sigma={s:.0%}", "drift", trades, mu=m, sigma=s)
                for m, s in ((0.08, 0.16), (0.20, 0.20), (0.0, 0.16))]
    if "caps" in kinds:
        out += [coin_case(f, 6, trades, caps="default") for f in (0.5, 1.5, 3.0, 4.5)]
    return out


# --- the policies -----------------------------------------------------------------------------------------------
class RandomExposure:
    """Uniform over the menu exposures the caps allow (0 included): what sizing without information earns."""

    name = "random"

    def __init__(self, menu: tuple[float, ...], seed: int) -> None:
        self._menu, self._rng = menu, random.Random(seed)

    def propose(self, ctx) -> Proposal:
        return Proposal(self._rng.choice([e for e in self._menu if ctx.feasible(e)]), self.name, "random")


class OracleByBucket:
    """The best fixed exposure of each confidence bucket, from the true distribution."""

    name = "oracle"

    def __init__(self, exposures: dict[str, float]) -> None:
        self._exposures = exposures

    def propose(self, ctx) -> Proposal:
        return Proposal(self._exposures[bucket(ctx.signal.confidence)], self.name, "oracle")


POLICIES = ("qlearning", "qlearning_shaped_pnl", "atr", "random", "fixed", "kelly", "half_kelly", "oracle")
DEFAULT_CAP_POLICIES = ("qlearning", "atr", "oracle")


def settings_for(case: Case, policy: str, database_url: str) -> Settings:
    configured = {"qlearning": {}, "qlearning_shaped_pnl": {"rl_sizing_reward": "shaped_pnl"},
                  "atr": {"sizing_policy": "atr"},
                  "fixed": {"sizing_policy": "fixed", "sizing_fixed_exposure": 1.0},
                  "kelly": {"sizing_policy": "kelly", "sizing_kelly_fraction": 1.0},
                  "half_kelly": {"sizing_policy": "kelly", "sizing_kelly_fraction": 0.5}}.get(policy, {})
    caps = WIDE_CAPS if case.caps == "wide" else {}
    return Settings(database_url=database_url, sim_symbols=(SYMBOL,), rl_sizing_seed=1, log_level="warning",
                    **PROTECTIONS_OFF, **caps, **configured)


def injected(policy: str, settings: Settings, t: Truth, seed: int):
    if policy == "random":
        return RandomExposure(settings.risk.exposure_menu(), seed)
    if policy == "oracle":
        return OracleByBucket({b: t.oracle(b) for b in CONFIDENCE_BUCKETS} if "all" not in t.growth
                              else {b: t.oracle("all") for b in CONFIDENCE_BUCKETS})
    return None


# --- one run ----------------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    case: str
    policy: str
    seed: int
    exposures: list[float]  # per signal, in order: notional / equity at entry (0: skipped)
    log_growth: list[float]  # per signal: ln(equity after / before)
    buckets: list[str]
    max_drawdown: float
    seconds: float
    notes: list[str] = field(default_factory=list)


def run(case: Case, policy: str, seed: int, t: Truth) -> RunResult:
    started = time.perf_counter()
    m = market(case, seed)
    with tempfile.TemporaryDirectory(dir=SCRATCH) as scratch:
        url = f"sqlite:///{scratch}/bench.db"
        settings = settings_for(case, policy, url)
        sim = settings.sim
        broker = SimBroker({SYMBOL: m.series}, start_index=WARMUP - 1, initial_cash=sim.initial_cash,
                           multiplier=sim.multiplier, slippage_bps=sim.slippage_bps, commission_bps=sim.commission_bps,
                           maintenance_margin=settings.risk.maintenance_margin)
        summary = run_replay(settings, broker=broker, policy=injected(policy, settings, t, seed),
                             signals=m.schedule())
        engine = sa.create_engine(url)
        with engine.connect() as c:
            rows = c.execute(sa.text(
                "SELECT s.signal_id, o.exposure, o.pnl_usd, t.equity_at_entry FROM signal s "
                "LEFT JOIN trade t ON t.signal_id = s.signal_id LEFT JOIN outcome o ON o.trade_id = t.id")).all()
        engine.dispose()
    by_id = {r[0]: r for r in rows}
    exposures, growth, notes = [], [], []
    for sig in m.signals:
        r = by_id.get(sig.signal_id)
        if r is None or r[1] is None:  # refused, or still open at the end: it took no part
            exposures.append(math.nan)
            growth.append(math.nan)
            continue
        exposures.append(r[1])
        growth.append(math.log1p(r[2] / r[3]))
    missing = sum(math.isnan(x) for x in exposures)
    if missing:
        notes.append(f"{missing} signal(s) without an outcome")
    return RunResult(case.name, policy, seed, exposures, growth, [bucket(c) for c in m.confidences],
                     summary.max_drawdown, time.perf_counter() - started, notes=notes)


# --- the measures ---------------------------------------------------------------------------------------------
def measures(result: RunResult, t: Truth, oracle: RunResult | None) -> dict:
    """What the issue asks per case, policy and seed, over the last half of the signals."""
    n = len(result.exposures)
    half = slice(n // 2, n)
    keys = [b if b in t.growth else "all" for b in result.buckets]
    exposure = np.nan_to_num(np.array(result.exposures))
    expected = np.array([t.at(k, e) for k, e in zip(keys, exposure)])
    best = np.array([t.growth[k].max() for k in keys])
    out = {
        "growth_expected": float(expected[half].sum() / best[half].sum()) if best[half].sum() > 0 else None,
        "log_growth": float(np.nansum(result.log_growth[n // 2:])),
        "mean_exposure": float(exposure[half].mean()),
        "max_drawdown": result.max_drawdown,
        "seconds": result.seconds,
    }
    if oracle is not None:
        realised = float(np.nansum(oracle.log_growth[n // 2:]))
        out["growth_realised"] = out["log_growth"] / realised if realised > 0 else None
    window = 100
    share = np.convolve(expected, np.ones(window), "valid") / np.maximum(np.convolve(best, np.ones(window), "valid"),
                                                                         1e-300)
    reached = np.flatnonzero(share >= 0.8) if best.max() > 0 else np.array([])
    out["to80"] = int(reached[0]) if len(reached) else None
    if "all" not in t.growth:
        labels = np.array(result.buckets)
        out["bucket_exposure"] = {b: float(exposure[half][labels[half] == b].mean()) for b in CONFIDENCE_BUCKETS}
    out["above_2f"] = float(np.mean([e > 2 * t.oracle(k) + 1e-9 for k, e in zip(keys[n // 2:], exposure[half])]))
    return out


def summarise(values: list) -> dict | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def report(all_cases: list[Case], truths: dict[str, Truth], results: list[RunResult]) -> dict:
    by = {(r.case, r.policy, r.seed): r for r in results}
    doc = {}
    for case in all_cases:
        t = truths[case.name]
        policies = sorted({r.policy for r in results if r.case == case.name}, key=POLICIES.index)
        seeds = sorted({r.seed for r in results if r.case == case.name})
        per_policy = {}
        for policy in policies:
            rows = [measures(by[(case.name, policy, s)], t, by.get((case.name, "oracle", s))) for s in seeds
                    if (case.name, policy, s) in by]
            entry = {m: summarise([r.get(m) for r in rows])
                     for m in ("growth_expected", "growth_realised", "mean_exposure", "to80", "max_drawdown",
                               "above_2f", "seconds")}
            if "all" not in t.growth:
                entry["bucket_exposure"] = {b: summarise([r["bucket_exposure"][b] for r in rows])
                                            for b in CONFIDENCE_BUCKETS}
            entry["never_reached_80"] = sum(r["to80"] is None for r in rows)
            per_policy[policy] = entry
        doc[case.name] = {
            "kind": case.kind, "trades": case.trades, "caps": case.caps, "p": case.p, "a": case.a, "mu": case.mu,
            "sigma": case.sigma, "f_star": t.f_star, "oracle": {k: t.oracle(k) for k in t.growth},
            "oracle_growth_per_trade": {k: float(t.growth[k].max()) for k in t.growth},
            "t500": case.t500, "seeds": seeds, "policies": per_policy,
        }
        if case.caps == "default":
            doc[case.name]["caps_allow"] = caps_share(case, t)
    return doc


def caps_share(case: Case, t: Truth) -> dict:
    """Under the default caps the best exposure a trade may take is the smallest of: RM_MAX_EXPOSURE and
    RM_MAX_POSITION_EXPOSURE (3x), the account's multiplier (4x) and RM_MAX_RISK_PCT / the stop distance."""
    s = Settings()
    limit = min(s.risk.max_exposure, s.risk.max_position_exposure, s.sim.multiplier, s.risk.max_leverage,
                s.risk.max_risk_pct / (1.5 * case.a))
    best_growth = float(t.growth["all"].max())
    capped = float(t.growth["all"][GRID <= limit + 1e-9].max())
    return {"limit": limit, "share_of_oracle_growth": capped / best_growth if best_growth > 0 else None}


def table(doc: dict) -> str:
    lines = ["| case | f* (oracle) | t500 | policy | growth vs oracle (expected) | realised | mean exposure | to 80% | "
             "max drawdown |", "|---|---|---|---|---|---|---|---|---|"]

    def fmt(x, pattern="{:.2f}"):
        if x is None:
            return "-"
        return f"{pattern.format(x['median'])} ({pattern.format(x['min'])}..{pattern.format(x['max'])})"

    for name, case in doc.items():
        f = ", ".join(f"{k}: {v:.2f} ({case['oracle'][k]:.2f})" for k, v in case["f_star"].items())
        t = "-" if case["t500"] is None else f"{case['t500']:.1f}"
        for policy, e in case["policies"].items():
            to80 = fmt(e["to80"], "{:.0f}") + (f", never in {e['never_reached_80']}" if e["never_reached_80"] else "")
            lines.append(f"| {name} | {f} | {t} | {policy} | {fmt(e['growth_expected'])} | {fmt(e['growth_realised'])}"
                         f" | {fmt(e['mean_exposure'])} | {to80} | {fmt(e['max_drawdown'], '{:.0%}')} |")
            if "bucket_exposure" in e:
                lines.append(f"| | | | {policy} by bucket | " + ", ".join(
                    f"{b}: {e['bucket_exposure'][b]['median']:.2f}" for b in CONFIDENCE_BUCKETS) + " | | | | |")
        if "caps_allow" in case:
            c = case["caps_allow"]
            lines.append(f"| | default caps allow {c['limit']:.2f}x: {c['share_of_oracle_growth']:.0%} of the oracle's "
                         "growth | | | | | | | |")
    return "\n".join(lines)


def task(args: tuple[Case, str, int, Truth]) -> RunResult:
    return run(*args)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="market seeds per case (0..N-1)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="runs at once (processes)")
    ap.add_argument("--cases", default="coin,confidence,drift,caps", help="which case families")
    ap.add_argument("--policies", default=",".join(POLICIES), help="which policies")
    ap.add_argument("--trades", type=int, default=1000, help="signals per case (the confidence case has twice)")
    ap.add_argument("--only", default="", help="run only the cases whose name contains this")
    ap.add_argument("--resume", type=Path, help="a runs file (.jsonl) of an interrupted run: its runs are kept")
    args = ap.parse_args()
    chosen = [c for c in cases(args.trades, set(args.cases.split(","))) if args.only in c.name]
    wanted = args.policies.split(",")
    truths = {c.name: truth(c, 0.1 if c.caps == "wide" else Settings().risk.maintenance_margin)
              for c in chosen}
    tasks = [(c, p, s, truths[c.name]) for c in chosen
             for p in (wanted if c.caps == "wide" else [p for p in DEFAULT_CAP_POLICIES if p in wanted])
             for s in range(args.seeds)]
    started = time.perf_counter()
    load = os.getloadavg()[0]
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    runs_file = args.resume or ROOT / "bench" / "results" / f"sizing-{stamp}.jsonl"
    runs_file.parent.mkdir(exist_ok=True)
    results = [RunResult(**json.loads(line)) for line in runs_file.read_text().splitlines()] if args.resume else []
    done = {(r.case, r.policy, r.seed) for r in results}
    tasks = [t for t in tasks if (t[0].name, t[1], t[2]) not in done]
    print(f"{len(tasks)} runs to go ({len(done)} kept); each is appended to {runs_file} as it ends",
          file=sys.stderr, flush=True)
    with ProcessPoolExecutor(args.jobs) as pool, open(runs_file, "a") as log:
        for i, result in enumerate(pool.map(task, tasks), 1):
            results.append(result)
            log.write(json.dumps(result.__dict__) + "\n")
            log.flush()
            print(f"[{i}/{len(tasks)}] {result.case} {result.policy} seed {result.seed}: {result.seconds:.0f} s"
                  + (f" ({'; '.join(result.notes)})" if result.notes else ""), file=sys.stderr, flush=True)
    doc = {"run": {"at": datetime.now().isoformat(timespec="seconds"), "seeds": args.seeds, "trades": args.trades,
                   "load_average_at_start": load, "minutes": (time.perf_counter() - started) / 60,
                   "settings": {k: v for k, v in Settings().variables().items()
                                if k.startswith(("rl_sizing", "rm_"))}},
           "cases": report(chosen, truths, results)}
    out = ROOT / "bench" / "results" / f"sizing-{stamp}.json"
    out.write_text(json.dumps(doc, indent=1, default=str))
    print(table(doc["cases"]))
    print(f"\n{len(results)} runs ({len(tasks)} now) in {doc['run']['minutes']:.1f} min, load average {load:.2f} at "
          f"the start; {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
