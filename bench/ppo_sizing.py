"""bench/ppo_sizing: does the PPO sizing policy learn what the Q agent must? Trained on one generated market,
tested on another seed's.

    .venv/bin/python bench/ppo_sizing.py [--cases coin:1.5:6,coin:3:6,coin:fair,coin:losing,confidence]
                                         [--steps 200000] [--seeds 0:1,2:3,4:5] [--threads 1]

Each case is one of bench/sizing's markets (backend/data/synthetic.py), under its wide caps. For each seed pair
TRAIN:TEST the policy trains in the signal sizing environment (`backend.rl.training.run_sizing`,
`SIZING_PPO`) on the market of seed TRAIN, then sizes every signal of the market of seed TEST greedily, in order.
Growth = the expected log growth of the exposures it took (the case's true growth function, as bench/sizing
measures the Q agent) / the oracle's (the best fixed exposure; per confidence bucket in the confidence case). Also
the mean exposure per confidence bucket, and where the signal's true edge is not positive (win probability at most
1/2: every signal of the fair and losing coins, confidence below 1/3 in the confidence case, whose lowest bucket
reaches 0.45). Results: a table on stdout (per case, the median over the seed pairs and
the range), and bench/results/ppo-sizing-<timestamp>.json with every run.
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
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.config import Settings  # noqa: E402
from backend.data.synthetic import PROTECTIONS_OFF, WIDE_CAPS, bucket, market, named_case, truth  # noqa: E402
from backend.rl.ppo import PPOConfig  # noqa: E402
from backend.rl.training import SIZING_PPO, SignalData, run_sizing  # noqa: E402


def config(steps: int, seed: int) -> PPOConfig:
    return PPOConfig(**SIZING_PPO, seed=seed, total_timesteps=steps, device="cpu")


def one(case_name: str, steps: int, train_seed: int, test_seed: int, trades: int) -> dict:
    started = time.perf_counter()
    data = SignalData(signals=case_name, trades=trades, train_seed=train_seed, test_seed=test_seed)
    with tempfile.TemporaryDirectory() as out:
        _, report = run_sizing(config(steps, 1), data, dict(WIDE_CAPS), Path(out),
                               Settings(**PROTECTIONS_OFF))
    held = report["held_out"]
    case = named_case(case_name, trades)
    t = truth(case, WIDE_CAPS["rm_maintenance_margin"])
    confidences = [s.signal.confidence for s in market(case, test_seed).timed][:held["signals"]]
    keys = [bucket(c) if case.kind == "confidence" else "all" for c in confidences]
    exposures = held["policy"]["exposures"]
    expected = np.array([t.at(k, e) for k, e in zip(keys, exposures)])
    best = np.array([t.growth[k].max() for k in keys])
    no_edge = np.array([case.win_probability(c) <= 0.5 for c in confidences])
    return {"case": case_name, "seeds": [train_seed, test_seed], "seconds": time.perf_counter() - started,
            "sps": report["last_update"]["charts/SPS"],
            "growth_vs_oracle": float(expected.sum() / best.sum()) if best.sum() > 0 else None,
            "mean_exposure": held["policy"]["mean_exposure"],
            "oracle": {k: t.oracle(k) for k in t.growth},
            "exposure_by_bucket": held["policy"]["exposure_by_confidence"],
            "exposure_without_edge": float(np.mean(np.array(exposures)[no_edge])) if no_edge.any() else None,
            "realised_log_growth": held["policy"]["log_growth"],
            "best_fixed_in_hindsight": held["best_fixed_in_hindsight"], "random": held["random"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="coin:1.5:6,coin:3:6,coin:fair,coin:losing,confidence")
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--seeds", default="0:1,2:3,4:5", help="seed pairs TRAIN:TEST, comma-separated")
    ap.add_argument("--trades", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    pairs = [tuple(int(x) for x in p.split(":")) for p in args.seeds.split(",")]
    rows = [one(c, args.steps, train, test, args.trades) for c in args.cases.split(",") for train, test in pairs]

    def spread(values: list[float]) -> str:
        return f"{np.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    print(f"median over the seed pairs {args.seeds} (range)")
    print("| case | growth vs oracle | mean exposure | without an edge | oracle exposure | exposure by confidence bucket |")
    print("|---|---|---|---|---|---|")
    for case in args.cases.split(","):
        runs = [r for r in rows if r["case"] == case]
        growth = [r["growth_vs_oracle"] for r in runs if r["growth_vs_oracle"] is not None]
        no_edge = [r["exposure_without_edge"] for r in runs if r["exposure_without_edge"] is not None]
        by = ", ".join(f"{k} {spread([r['exposure_by_bucket'][k] for r in runs])}"
                       for k in runs[0]["exposure_by_bucket"])
        oracle = ", ".join(f"{v:g}" for v in runs[0]["oracle"].values())
        print(f"| {case} | {spread(growth) if growth else '-'} | {spread([r['mean_exposure'] for r in runs])} | "
              f"{spread(no_edge) if no_edge else '-'} | {oracle} | {by} |")
    end = os.getloadavg()
    out = ROOT / "bench" / "results" / f"ppo-sizing-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"load_average": {"start": load, "end": end}, "args": vars(args), "cases": rows},
                              indent=1))
    print(f"load average {load[0]:.2f} at the start, {end[0]:.2f} at the end; {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
