"""Benchmark our vectorised PPO trainer against sb3-contrib's MaskablePPO on the signal sizing environment, CPU.

    .venv/bin/python bench/train.py [--case confidence] [--equal-steps 16384] [--ours-steps 200000]
                                    [--threads 2] [--seconds 3]

Data: one of bench/sizing's generated markets (bench/ppo_sizing's cases), trained on market seed 0, held out:
seed 1, under bench/sizing's wide caps; the observation and the PPO configuration are bench/ppo_sizing's.
In one run, torch.set_num_threads(--threads) for everything:

(a) environment steps/s with uniformly random valid exposures, time-boxed (--seconds): `SignalSizingEnv` with
    1,024 environments, and its gymnasium view `SignalSizingGymEnv` (one environment, reset at each episode end);
(b) training steps/s (environment steps per second of the whole training call): ours (`backend.rl.ppo.train`) and
    MaskablePPO("MlpPolicy") on the gymnasium view (sb3 defaults: n_steps 2048, batch 64, 10 epochs, 64x64 MLP;
    gamma 0 as ours, each decision being one step; rewards x 100 with TransformReward, ours' reward_scale), both
    for --equal-steps, and ours also for --ours-steps;
(c) held-out growth: each trained policy sizes every held-out signal greedily, in order (`training.held_out`):
    its log growth beside skipping and the best fixed exposure in hindsight.
Before anything is timed, what the process pays once is paid (`warm_up`), so that every figure shares it.
A table on stdout and bench/results/train-<timestamp>.json, with the load average at the start and the end.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ppo_sizing import config  # noqa: E402

from backend.config import Settings  # noqa: E402
from backend.data.synthetic import PROTECTIONS_OFF, WIDE_CAPS  # noqa: E402
from backend.rl.observation import fit_spec, market_features  # noqa: E402
from backend.rl.ppo import keep_freed_memory, train  # noqa: E402
from backend.rl.signal_env import SignalSizingEnv, sizing_spec, trade_paths  # noqa: E402
from backend.rl.signal_gym import SignalSizingGymEnv  # noqa: E402
from backend.rl.training import SignalData, held_out, sizing_data  # noqa: E402

N_ENVS = 1024


def warm_up() -> None:
    """The first torch optimizer of a process imports torch._dynamo (2.5 s here), whichever trainer makes it; and
    glibc keeps freed memory in its heap (`keep_freed_memory`, which our trainer sets on the CPU) for all."""
    keep_freed_memory()
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def env_sps(args: tuple, seconds: float) -> dict:
    env = SignalSizingEnv(*args, n_envs=N_ENVS)
    gen = torch.Generator().manual_seed(0)
    _, mask = env.reset()
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        _, mask, *_ = env.step(torch.multinomial(mask.float(), 1, generator=gen).squeeze(1))
        steps += N_ENVS
    vector = steps / (time.perf_counter() - started)
    gym_env, rng = SignalSizingGymEnv(*args), np.random.default_rng(0)
    gym_env.reset(seed=0)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        *_, truncated, _ = gym_env.step(rng.choice(np.flatnonzero(gym_env.action_masks())))
        if truncated:
            gym_env.reset()
        steps += 1
    return {"vectorised_1024_envs": vector, "gym_view": steps / (time.perf_counter() - started)}


def ours(args: tuple, steps: int, test_args: tuple) -> dict:
    cfg = config(steps, 1)
    env = SignalSizingEnv(*args, n_envs=cfg.n_envs, seed=cfg.seed)
    started = time.perf_counter()
    agent, history = train(cfg, env)
    seconds = time.perf_counter() - started
    done = history[-1]["global_step"]
    return {"steps": done, "seconds": seconds, "steps_per_s": done / seconds,
            "held_out": held_out(agent.greedy, test_args, test_args[-1])}


def maskable(args: tuple, steps: int, test_args: tuple) -> dict:
    from gymnasium.wrappers import TransformReward
    from sb3_contrib import MaskablePPO

    env = TransformReward(SignalSizingGymEnv(*args, seed=1), lambda r: r * 100)
    model = MaskablePPO("MlpPolicy", env, gamma=0.0, seed=1, device="cpu")
    started = time.perf_counter()
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - started

    def act(obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        action, _ = model.predict(obs[0].numpy(), action_masks=mask[0].numpy(), deterministic=True)
        return torch.tensor([int(action)])

    return {"steps": model.num_timesteps, "seconds": seconds, "steps_per_s": model.num_timesteps / seconds,
            "held_out": held_out(act, test_args, test_args[-1])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="confidence")
    ap.add_argument("--equal-steps", type=int, default=16_384)
    ap.add_argument("--ours-steps", type=int, default=200_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    warm_up()
    load_start = os.getloadavg()
    settings = Settings(**PROTECTIONS_OFF, **WIDE_CAPS)
    risk, sim, window = settings.risk, settings.sim, settings.state.win_rate_window
    menu = risk.exposure_menu()
    data = SignalData(signals=a.case)
    train_series, train_signals, test_series, test_signals, _, rows = sizing_data(data, settings)
    spec = sizing_spec(fit_spec(market_features(*(getattr(train_series[0], f) for f in (
        "open", "high", "low", "close", "volume")))[:rows], data.window))
    train_args = (trade_paths(train_series, train_signals, risk, sim, window, menu).pessimistic(
        settings.sizing.confidence_z), train_series, spec, risk, sim, menu)
    test_args = (trade_paths(test_series, test_signals, risk, sim, window, menu), test_series, spec, risk, sim, menu)
    result = {"case": a.case, "args": vars(a), "env_steps_per_s": env_sps(train_args, a.seconds),
              "ours_equal": ours(train_args, a.equal_steps, test_args),
              "maskable_ppo": maskable(train_args, a.equal_steps, test_args),
              "ours": ours(train_args, a.ours_steps, test_args)}
    result["load_average"] = {"start": load_start, "end": os.getloadavg()}
    peer = result["maskable_ppo"]["steps_per_s"]
    ref = result["ours"]["held_out"]
    print(f"env steps/s, random valid exposures: {result['env_steps_per_s']['vectorised_1024_envs']:,.0f} "
          f"(1,024 envs), {result['env_steps_per_s']['gym_view']:,.0f} (gym view)")
    print("| | env steps | seconds | steps/s | vs MaskablePPO | held-out log growth | mean exposure |")
    print("|---|---|---|---|---|---|---|")
    for name in ("ours_equal", "ours", "maskable_ppo"):
        r = result[name]
        print(f"| {name} | {r['steps']:,} | {r['seconds']:.1f} | {r['steps_per_s']:,.0f} | "
              f"{r['steps_per_s'] / peer:.0f}x | {r['held_out']['policy']['log_growth']:.3f} | "
              f"{r['held_out']['policy']['mean_exposure']:.2f} |")
    print(f"skip 0, best fixed in hindsight {ref['best_fixed_in_hindsight']}; load average {load_start} -> "
          f"{result['load_average']['end']}")
    for r in (result["ours_equal"], result["ours"], result["maskable_ppo"]):
        r["held_out"] = {k: v for k, v in r["held_out"].items() if k != "policy"} | {
            "policy": {k: v for k, v in r["held_out"]["policy"].items() if k != "exposures"}}
    out = ROOT / "bench" / "results" / f"train-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
