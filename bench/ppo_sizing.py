"""bench/ppo_sizing: does the PPO sizing policy learn what the Q agent must? Trained on one generated market,
tested on another seed's.

    .venv/bin/python bench/ppo_sizing.py [--cases coin:1.5:6,coin:3:6,coin:fair,coin:losing,confidence]
                                         [--steps 200000] [--train-seed 0] [--test-seed 1]

Each case is one of bench/sizing's markets (backend/data/synthetic.py), under its wide caps. The policy trains in
the signal sizing environment (`backend.rl.training.run_sizing`, the config below) on the market of --train-seed,
then sizes every signal of the market of --test-seed greedily, in order. Growth = the expected log growth of the
exposures it took (the case's true growth function, as bench/sizing measures the Q agent) / the oracle's (the
best fixed exposure; per confidence bucket in the confidence case). Also the mean exposure per confidence bucket.
Results: a table on stdout and bench/results/ppo-sizing-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.config import Settings  # noqa: E402
from backend.data.synthetic import PROTECTIONS_OFF, WIDE_CAPS, bucket, market, named_case, truth  # noqa: E402
from backend.rl.ppo import PPOConfig  # noqa: E402
from backend.rl.training import SignalData, run_sizing  # noqa: E402


def config(steps: int, seed: int) -> PPOConfig:
    return PPOConfig(seed=seed, total_timesteps=steps, n_envs=1024, n_steps=4, n_minibatches=4, gamma=0.0,
                     hidden=64, learning_rate=1e-3, device="cpu")


def one(case_name: str, steps: int, train_seed: int, test_seed: int, trades: int) -> dict:
    started = time.perf_counter()
    data = SignalData(signals=case_name, trades=trades, train_seed=train_seed, test_seed=test_seed)
    with tempfile.TemporaryDirectory() as out:
        _, report = run_sizing(config(steps, 1), data, dict(WIDE_CAPS), Path(out),
                               Settings(_env_file=None, **PROTECTIONS_OFF))
    held = report["held_out"]
    case = named_case(case_name, trades)
    t = truth(case, WIDE_CAPS["rm_maintenance_margin"])
    confidences = [s.signal.confidence for s in market(case, test_seed).timed][:held["signals"]]
    keys = [bucket(c) if case.kind == "confidence" else "all" for c in confidences]
    exposures = held["policy"]["exposures"]
    expected = np.array([t.at(k, e) for k, e in zip(keys, exposures)])
    best = np.array([t.growth[k].max() for k in keys])
    return {"case": case_name, "seconds": time.perf_counter() - started,
            "sps": report["last_update"]["charts/SPS"],
            "growth_vs_oracle": float(expected.sum() / best.sum()) if best.sum() > 0 else None,
            "mean_exposure": held["policy"]["mean_exposure"],
            "oracle": {k: t.oracle(k) for k in t.growth},
            "exposure_by_bucket": held["policy"]["exposure_by_confidence"],
            "realised_log_growth": held["policy"]["log_growth"],
            "best_fixed_in_hindsight": held["best_fixed_in_hindsight"], "random": held["random"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="coin:1.5:6,coin:3:6,coin:fair,coin:losing,confidence")
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--test-seed", type=int, default=1)
    ap.add_argument("--trades", type=int, default=1000)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    rows = [one(c, args.steps, args.train_seed, args.test_seed, args.trades) for c in args.cases.split(",")]
    print("| case | growth vs oracle | mean exposure | oracle exposure | exposure by confidence bucket | seconds |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        g = "-" if r["growth_vs_oracle"] is None else f"{r['growth_vs_oracle']:.3f}"
        by = ", ".join(f"{k} {v:.2f}" for k, v in r["exposure_by_bucket"].items())
        oracle = ", ".join(f"{v:g}" for v in r["oracle"].values())
        print(f"| {r['case']} | {g} | {r['mean_exposure']:.2f} | {oracle} | {by} | {r['seconds']:.0f} |")
    out = ROOT / "bench" / "results" / f"ppo-sizing-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"load_average_at_start": load, "args": vars(args), "cases": rows}, indent=1))
    print(f"load average {load:.2f} at the start; {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
