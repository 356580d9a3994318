"""Validation of a trained policy on held-out bars: what it does there, and whether it has collapsed.

Checks adapted from seed 002: the share of invalid (masked) actions chosen is 0; no single trading action
takes more than 60% of decisions; and the policy trades at all. HOLD may dominate, as seed 002 itself expects
(80-90% HOLD while flat): in this environment a full position is reached by scaling in and then kept with
HOLD, so HOLD is reported separately while flat and while holding a position instead of being failed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch

from backend.rl.env import ACTION_NAMES, HOLD, N_ACTIONS, EnvConfig, MarketTensors, SizingEnv
from backend.rl.observation import ObservationSpec
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
    mean_final_account: float  # final account / initial, mean over the episodes
    buy_and_hold: float  # the same episodes' price ratio (a 100% long position)
    checks: dict[str, bool]

    @property
    def passed(self) -> bool:
        return all(self.checks.values())

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def episode_starts(market: MarketTensors, spec: ObservationSpec, cfg: EnvConfig, k: int) -> torch.Tensor:
    """k evenly spaced start bars whose whole episode (window history included) fits in the market."""
    first_valid = int(torch.nonzero(market.valid.all(dim=0))[0])
    t_min, last_start = first_valid + spec.window - 1, market.close.shape[1] - 1 - cfg.episode_bars
    if last_start < t_min:
        raise ValueError("the held-out window is shorter than one episode")
    return torch.linspace(t_min, last_start, k).round().long().unique()


Act = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (obs, mask) -> actions


@torch.no_grad()
def validate(act: Act, market: MarketTensors, spec: ObservationSpec, cfg: EnvConfig, episodes: int = 64
             ) -> Validation:
    """`act` plays one full episode from each of `episodes` evenly spaced starts (series taken in turn);
    the first end of each episode (ruin or its last bar) counts. Deterministic for a deterministic `act`."""
    starts = episode_starts(market, spec, cfg, episodes)
    k = len(starts)
    series = torch.arange(k) % market.close.shape[0]
    env = SizingEnv(market, spec, cfg, k, auto_reset=False)
    obs, mask = env.reset(starts=starts, series=series)
    counts = torch.zeros(N_ACTIONS)
    invalid = 0
    holds = {True: [0, 0], False: [0, 0]}  # flat? -> [HOLD decisions, decisions]
    final = torch.full((k,), float("nan"))
    for _ in range(cfg.episode_bars):
        live = final.isnan()
        action = act(obs, mask)
        invalid += int((~mask[torch.arange(k), action])[live].sum())
        counts += torch.bincount(action[live], minlength=N_ACTIONS).float()
        flat = env.units == 0
        for is_flat, rows in ((True, flat & live), (False, ~flat & live)):
            holds[is_flat][0] += int((action[rows] == HOLD).sum())
            holds[is_flat][1] += int(rows.sum())
        obs, mask, _, terminated, truncated, info = env.step(action)
        done = terminated | truncated
        first = done & live
        if first.any():
            final[first] = info["final_account"][first[done]] / cfg.initial_account_value
        if not final.isnan().any():
            break
    ends = torch.clamp(starts + cfg.episode_bars, max=market.close.shape[1] - 1)
    buy_and_hold = float((market.close[series, ends] / market.close[series, starts]).mean())
    dominance, entropy = collapse_stats(counts)
    total = float(counts.sum())
    share = counts / total
    return Validation(
        action_share={name: float(c) / total for name, c in zip(ACTION_NAMES, counts.tolist())},
        invalid_share=invalid / total,
        dominant_action=ACTION_NAMES[int(counts.argmax())],
        dominance=dominance,
        action_entropy=entropy,
        hold_share_flat=holds[True][0] / max(1, holds[True][1]),
        hold_share_in_position=holds[False][0] / max(1, holds[False][1]),
        episodes=k,
        mean_final_account=float(final.nanmean()),
        buy_and_hold=buy_and_hold,
        checks={
            "no_invalid_actions": invalid == 0,
            "no_trading_action_over_60pct": float(share[1:].max()) <= MAX_TRADING_ACTION_SHARE,
            "trades": 1.0 - float(share[HOLD]) >= MIN_TRADING_SHARE,
        },
    )
