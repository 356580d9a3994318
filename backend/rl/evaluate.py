"""Validation of a trained policy on held-out bars: what it does there, and whether it has collapsed.

Checks adapted from seed 002: the share of invalid (masked) actions chosen is 0; no single trading action
takes more than 60% of decisions; and the policy trades at all. HOLD may dominate, as seed 002 itself expects
(80-90% HOLD while flat): in this environment a full position is reached by scaling in and then kept with
HOLD, so HOLD is reported separately while flat and while holding a position instead of being failed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from backend.rl.checkpoint import LoadedPolicy
from backend.rl.env import ACTION_NAMES, HOLD, N_ACTIONS, MarketTensors, SizingEnv
from backend.rl.ppo import collapse_stats

MAX_TRADING_ACTION_SHARE = 0.60
MIN_TRADING_SHARE = 0.01  # below this the policy has collapsed onto HOLD


@dataclass(frozen=True)
class Validation:
    action_share: dict[str, float]
    invalid_share: float
    dominant_action: str
    dominance: float
    action_entropy: float
    hold_share_flat: float  # HOLD among decisions taken with no position
    hold_share_in_position: float
    episodes: int
    mean_final_account: float  # final account / initial, mean over finished episodes
    buy_and_hold: float  # the same episodes' price ratio (a 100% long position)
    checks: dict[str, bool]

    @property
    def passed(self) -> bool:
        return all(self.checks.values())

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


@torch.no_grad()
def validate(policy: LoadedPolicy, market: MarketTensors, n_envs: int = 64, seed: int = 0) -> Validation:
    """Greedy play (the most probable valid action) for one episode length in every environment."""
    env = SizingEnv(market, policy.spec, policy.env, n_envs, seed=seed)
    obs, mask = env.reset()
    counts = torch.zeros(N_ACTIONS)
    invalid = 0
    holds = {True: [0, 0], False: [0, 0]}  # flat? -> [HOLD decisions, decisions]
    finals, drifts = [], []
    start_price = env._price(market.close, env.t).clone()
    for _ in range(policy.env.episode_bars):
        action = policy.probabilities(obs, mask).argmax(dim=-1)
        invalid += int((~mask[torch.arange(env.n), action]).sum())
        counts += torch.bincount(action, minlength=N_ACTIONS).float()
        flat = env.units == 0
        for is_flat, rows in ((True, flat), (False, ~flat)):
            holds[is_flat][0] += int((action[rows] == HOLD).sum())
            holds[is_flat][1] += int(rows.sum())
        price_before_reset = env._price(market.close, env.t + 1)
        obs, mask, _, terminated, truncated, info = env.step(action)
        done = terminated | truncated
        if done.any():
            finals.append(info["final_account"] / policy.env.initial_account_value)
            drifts.append(price_before_reset[done] / start_price[done])
            start_price[done] = env._price(market.close, env.t)[done]
    finals_t = torch.cat(finals) if finals else torch.ones(1)
    drift_t = torch.cat(drifts) if drifts else torch.ones(1)
    dominance, entropy = collapse_stats(counts)
    dominant = int(counts.argmax())
    total = float(counts.sum())
    share = counts / total
    return Validation(
        action_share={name: float(c) / total for name, c in zip(ACTION_NAMES, counts.tolist())},
        invalid_share=invalid / total,
        dominant_action=ACTION_NAMES[dominant],
        dominance=dominance,
        action_entropy=entropy,
        hold_share_flat=holds[True][0] / max(1, holds[True][1]),
        hold_share_in_position=holds[False][0] / max(1, holds[False][1]),
        episodes=len(finals_t) if finals else 0,
        mean_final_account=float(finals_t.mean()),
        buy_and_hold=float(drift_t.mean()),
        checks={
            "no_invalid_actions": invalid == 0,
            "no_trading_action_over_60pct": float(share[1:].max()) <= MAX_TRADING_ACTION_SHARE,
            "trades": 1.0 - float(share[HOLD]) >= MIN_TRADING_SHARE,
        },
    )
