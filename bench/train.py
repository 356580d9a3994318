"""Benchmark our vectorised PPO trainer against sb3-contrib's MaskablePPO on the same sizing environment, CPU.

Run on demand (not part of the test suite), from the project root:

    .venv/bin/python bench/train.py [--threads 2] [--equal-steps 49152] [--ours-steps 196608,1048576]
                                    [--eval-episodes 64] [--seed 0]

Data: the bundled SP500 daily bars. Training rows are 1999 .. the 2012-12-31 bar (by index), held-out rows
2013-01-02 .. 2018-12-31; the observation spec (window 32) is fitted on the training rows only, and the
held-out features are computed causally over the whole history (no warm-up of their own). EnvConfig defaults.

What it measures, in one run (torch.set_num_threads(--threads) for everything):

(a) environment throughput with uniformly random valid (masked) actions, time-boxed: the vectorised
    `SizingEnv` at --n-envs (default 1024), and the gymnasium view `SizingGymEnv`
    (one environment, reset on episode end).
(b) training throughput (environment steps per wall-clock second of the whole training call):
    - ours: `backend.rl.ppo.train`, --n-envs (default 1024), n_steps=64, its defaults otherwise;
    - MaskablePPO("MlpPolicy") on `SizingGymEnv` (sb3 wraps it in Monitor + DummyVecEnv itself), n_steps=2048,
      batch_size=64, sb3 defaults otherwise (10 epochs, 64x64 MLP, ent_coef 0). Its rewards are multiplied by
      100 with gymnasium's TransformReward, the same scale our trainer applies (PPOConfig.reward_scale), so both
      learn from the same signal; its throughput is also recorded per rollout.
    Both run for the same budget --equal-steps (default 49,152 = 3 of our rollouts = 24 of MaskablePPO's, what
    MaskablePPO finishes in a few minutes on 2 cores); ours is also run at the larger --ours-steps budgets.
    The throughput ratio ours / MaskablePPO is reported at the equal budget and at each larger one.
(c) held-out return: every trained agent plays greedily (argmax over the masked logits / probabilities) a fixed
    set of --eval-episodes episodes on 2013-2018, their starts spaced evenly over the held-out window, each a
    full `episode_bars` long unless ruined; reported is the mean of final account / initial. Baselines on the
    same episodes: always HOLD (1.0 exactly: no position, no costs), "max long" (BUY_75 whenever allowed,
    else HOLD: scales into the 20% position cap and keeps it), and the index's own price ratio over the
    episodes (a 100% long, for context only: no agent may hold more than 20%).

A table is printed and the figures are written to bench/results/train-<timestamp>.json. One seed per agent:
held-out returns differ by seed, so read small differences between agents as noise.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.data.bundled import load_bundled
from backend.rl.env import (
    BUY_75,
    HOLD,
    EnvConfig,
    MarketTensors,
    SizingEnv,
)
from backend.rl.evaluate import episode_starts, validate
from backend.rl.gym_env import SizingGymEnv
from backend.rl.observation import fit_spec, market_features
from backend.rl.ppo import PPOConfig, train

TRAIN_END = np.datetime64("2012-12-31", "s")
TEST_START, TEST_END = np.datetime64("2013-01-01", "s"), np.datetime64("2018-12-31", "s")
WINDOW = 32
N_STEPS = 64
N_ENVS = 1024  # set from --n-envs in main()
SB3_N_STEPS, SB3_BATCH = 2048, 64


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", flush=True)


# --- (a) environment throughput ----------------------------------------------------------------------------
def vector_env_sps(market, spec, cfg, seconds: float) -> dict:
    env = SizingEnv(market, spec, cfg, N_ENVS, seed=0)
    gen = torch.Generator().manual_seed(0)
    _, mask = env.reset()
    for _ in range(5):  # warm-up
        _, mask, *_ = env.step(torch.multinomial(mask.float(), 1, generator=gen).squeeze(1))
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(20):
            _, mask, *_ = env.step(torch.multinomial(mask.float(), 1, generator=gen).squeeze(1))
        steps += 20
    elapsed = time.perf_counter() - started
    return {"n_envs": N_ENVS, "vector_steps": steps, "env_steps": steps * N_ENVS, "seconds": elapsed,
            "env_steps_per_s": steps * N_ENVS / elapsed}


def gym_env_sps(market, spec, cfg, seconds: float) -> dict:
    env = SizingGymEnv(market, spec, cfg, seed=0)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    steps, episodes, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(100):
            _, _, terminated, truncated, _ = env.step(rng.choice(np.flatnonzero(env.action_masks())))
            if terminated or truncated:
                env.reset()
                episodes += 1
        steps += 100
    elapsed = time.perf_counter() - started
    return {"n_envs": 1, "env_steps": steps, "episodes": episodes, "seconds": elapsed,
            "env_steps_per_s": steps / elapsed}


# --- (b) training ------------------------------------------------------------------------------------------
def train_ours(market, spec, cfg, steps: int, seed: int):
    config = PPOConfig(seed=seed, total_timesteps=steps, n_envs=N_ENVS, n_steps=N_STEPS, env=cfg, device="cpu")
    env = SizingEnv(market, spec, cfg, N_ENVS, seed=seed)
    started = time.perf_counter()
    agent, history = train(config, env)
    elapsed = time.perf_counter() - started
    done = history[-1]["global_step"]
    agent.eval()

    returns = [r["charts/episodic_return"] for r in history if r["charts/episodic_return"] is not None]
    stats = {"agent": "ours", "budget": steps, "env_steps": done, "updates": len(history), "seconds": elapsed,
             "env_steps_per_s": done / elapsed, "trainer_reported_sps": history[-1]["charts/SPS"],
             "last_train_episodic_return": returns[-1] if returns else None}
    return agent.greedy, stats


def train_maskable(market, spec, cfg, steps: int, seed: int, reward_scale: float):
    from gymnasium.wrappers import TransformReward
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.callbacks import BaseCallback

    class Timer(BaseCallback):
        def __init__(self):
            super().__init__()
            self.marks: list[tuple[int, float]] = []

        def _on_training_start(self) -> None:
            self.marks.append((self.num_timesteps, time.perf_counter()))

        def _on_rollout_end(self) -> None:
            self.marks.append((self.num_timesteps, time.perf_counter()))

        def _on_step(self) -> bool:
            return True

    env = TransformReward(SizingGymEnv(market, spec, cfg, seed=seed), lambda r: r * reward_scale)
    model = MaskablePPO("MlpPolicy", env, n_steps=SB3_N_STEPS, batch_size=SB3_BATCH, seed=seed, device="cpu",
                        verbose=0)
    timer = Timer()
    started = time.perf_counter()
    model.learn(total_timesteps=steps, callback=timer)
    elapsed = time.perf_counter() - started
    # rollout i+1's collection starts after update i: the time between rollout ends covers one collection and
    # one update, i.e. steady-state throughput
    per_rollout = [(b[0] - a[0]) / (b[1] - a[1]) for a, b in zip(timer.marks[1:], timer.marks[2:])]

    def act(obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        action, _ = model.predict(obs.numpy(), action_masks=mask.numpy(), deterministic=True)
        return torch.as_tensor(action, dtype=torch.long)

    stats = {"agent": "MaskablePPO", "budget": steps, "env_steps": int(model.num_timesteps), "seconds": elapsed,
             "env_steps_per_s": model.num_timesteps / elapsed,
             "per_rollout_env_steps_per_s": per_rollout}
    return act, stats


# --- main --------------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for everything")
    ap.add_argument("--n-envs", type=int, default=1024, help="environments of our vectorised trainer")
    ap.add_argument("--equal-steps", type=int, default=49_152, help="budget both trainers run")
    ap.add_argument("--ours-steps", default="196608,1048576", help="larger budgets for ours only (comma list)")
    ap.add_argument("--eval-episodes", type=int, default=64)
    ap.add_argument("--env-seconds", type=float, default=8.0, help="time box of each env throughput test")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    global N_ENVS
    N_ENVS = args.n_envs
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    bench_started = time.perf_counter()

    sp = load_bundled("SP500")
    rows = int(np.searchsorted(sp.ts, TRAIN_END, side="right"))
    spec = fit_spec(market_features(sp.open, sp.high, sp.low, sp.close, sp.volume)[:rows], window=WINDOW)
    cfg = EnvConfig()
    train_market = MarketTensors.build([sp], spec, end=TRAIN_END)
    test_market = MarketTensors.build([sp], spec, start=TEST_START, end=TEST_END)
    reward_scale = PPOConfig().reward_scale
    log(f"train bars {train_market.close.shape[1]} (to {sp.ts[rows - 1].astype('datetime64[D]')}), "
        f"held-out bars {test_market.close.shape[1]}; torch threads {torch.get_num_threads()}; "
        f"load average {load_before}")

    env_rates = {"vector": vector_env_sps(train_market, spec, cfg, args.env_seconds)}
    log(f"SizingEnv n={N_ENVS}: {env_rates['vector']['env_steps_per_s']:,.0f} env steps/s")
    env_rates["gym"] = gym_env_sps(train_market, spec, cfg, args.env_seconds)
    log(f"SizingGymEnv: {env_rates['gym']['env_steps_per_s']:,.0f} env steps/s")

    starts = episode_starts(test_market, spec, cfg, args.eval_episodes)

    def held_out(act) -> dict:
        return validate(act, test_market, spec, cfg, episodes=args.eval_episodes).to_dict()

    baselines = {
        "always_hold": held_out(lambda o, m: torch.full((len(o),), HOLD)),
        "max_long": held_out(lambda o, m: torch.where(m[:, BUY_75], BUY_75, HOLD)),
    }
    index_ratio = baselines["always_hold"]["buy_and_hold"]

    runs = []
    budgets = [args.equal_steps] + [int(s) for s in args.ours_steps.split(",") if s.strip()]
    for steps in budgets:
        log(f"ours: training {steps:,} steps")
        act, stats = train_ours(train_market, spec, cfg, steps, args.seed)
        stats["held_out"] = held_out(act)
        runs.append(stats)
        log(f"ours: {stats['env_steps']:,} steps in {stats['seconds']:.1f} s = {stats['env_steps_per_s']:,.0f}/s; "
            f"held-out {stats['held_out']['mean_final_account']:.4f}")
    log(f"MaskablePPO: training {args.equal_steps:,} steps")
    act, stats = train_maskable(train_market, spec, cfg, args.equal_steps, args.seed, reward_scale)
    stats["held_out"] = held_out(act)
    runs.append(stats)
    sb3 = stats
    log(f"MaskablePPO: {sb3['env_steps']:,} steps in {sb3['seconds']:.1f} s = {sb3['env_steps_per_s']:,.1f}/s; "
        f"held-out {sb3['held_out']['mean_final_account']:.4f}")

    for r in runs:
        r["throughput_ratio_vs_maskable"] = r["env_steps_per_s"] / sb3["env_steps_per_s"]
    total = time.perf_counter() - bench_started

    print()
    print(f"environment steps/s (random valid actions, {torch.get_num_threads()} torch threads)")
    print(f"  SizingEnv, n_envs={N_ENVS:<6}{env_rates['vector']['env_steps_per_s']:>12,.0f}")
    print(f"  SizingGymEnv, 1 env        {env_rates['gym']['env_steps_per_s']:>12,.0f}")
    print(f"  ratio                      {env_rates['vector']['env_steps_per_s'] / env_rates['gym']['env_steps_per_s']:>12,.1f}x")
    print()
    print(f"held-out SP500 2013-2018, {len(starts)} greedy episodes of {cfg.episode_bars} bars: "
          "mean final account / initial")
    head = f"{'agent':<14}{'budget':>10}{'env steps':>11}{'seconds':>9}{'steps/s':>10}{'vs Maskable':>13}{'held-out':>10}"
    print(head)
    print("-" * len(head))
    for r in runs:
        print(f"{r['agent']:<14}{r['budget']:>10,}{r['env_steps']:>11,}{r['seconds']:>9.1f}{r['env_steps_per_s']:>10,.0f}"
              f"{r['throughput_ratio_vs_maskable']:>12,.1f}x{r['held_out']['mean_final_account']:>10.4f}")
    for name, b in baselines.items():
        print(f"{name:<14}{'':>10}{'':>11}{'':>9}{'':>10}{'':>13}{b['mean_final_account']:>10.4f}")
    print(f"{'index ratio':<14}{'':>53}{index_ratio:>10.4f}  (100% long, context only)")
    equal = runs[0]
    print(f"\nthroughput ours / MaskablePPO at the equal budget ({args.equal_steps:,} steps): "
          f"{equal['throughput_ratio_vs_maskable']:.1f}x (project target >= 100x at equal or better held-out "
          f"return: held-out ours {equal['held_out']['mean_final_account']:.4f} vs MaskablePPO "
          f"{sb3['held_out']['mean_final_account']:.4f})")
    print(f"bench wall time {total:.0f} s; load average before {load_before}, after {os.getloadavg()}")

    import gymnasium
    import sb3_contrib
    import stable_baselines3

    out = ROOT / "bench" / "results" / f"train-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "args": vars(args),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "gymnasium": gymnasium.__version__, "stable_baselines3": stable_baselines3.__version__,
                    "sb3_contrib": sb3_contrib.__version__, "load_average_before": load_before,
                    "load_average_after": os.getloadavg()},
        "data": {"symbol": "SP500", "train_bars": int(train_market.close.shape[1]),
                 "train_end": str(sp.ts[rows - 1].astype("datetime64[D]")),
                 "held_out_bars": int(test_market.close.shape[1]), "window": WINDOW,
                 "eval_starts": starts.tolist()},  # what validate plays, recorded for the reader
        "env_config": asdict(cfg),
        "reward_scale": reward_scale,
        "env_throughput": env_rates,
        "training": runs,
        "baselines": {**baselines, "index_price_ratio": index_ratio},
        "bench_seconds": total,
    }, indent=1))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
